# shellcheck shell=bash
# Shared by scripts/up and scripts/test: logging, root and apt helpers, and the venv.
# Source it after setting ROOT. It sets VENV and exports the non-interactive
# settings for apt and pip.

VENV="$ROOT/.venv"
APT_UPDATED=0
export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_NO_INPUT=1

log() { printf '    %s\n' "$*"; }
die() {
    printf 'scripts/test: %s\n' "$*" >&2
    exit 1
}

# Seconds (one decimal) elapsed since the nanosecond timestamp $1.
elapsed_since() {
    local start_ns=$1 now_ns
    now_ns=$(date +%s%N)
    awk -v d="$((now_ns - start_ns))" 'BEGIN { printf "%.1fs", d / 1e9 }'
}

# Run "$@" as root: directly when we are root, else through sudo.
as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo -n "$@"
    else
        die "need root (or passwordless sudo) to run: $*"
    fi
}

apt_install() {
    if [[ $APT_UPDATED -eq 0 ]]; then
        log "apt-get update"
        as_root apt-get update -qq
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ------------------------------------------------------------------------ python venv

find_python() {
    local candidate
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

# setup_venv [EXTRA]: create .venv if needed and install the project (with EXTRA,
# e.g. "dev") whenever pyproject.toml or the extra changed since the last install.
setup_venv() {
    local extra=${1:-} python
    if [[ ! -x $VENV/bin/python ]]; then
        if ! python=$(find_python); then
            apt_install python3 python3-venv
            python=$(find_python) || die "no python >= 3.11 available"
        fi
        log "creating $VENV with $python"
        if ! "$python" -m venv "$VENV"; then
            # Debian's python3 needs python3-venv for ensurepip.
            rm -rf "$VENV"
            apt_install python3-venv
            "$python" -m venv "$VENV"
        fi
    fi

    local wanted target=. stamp="$VENV/.svrctl-install-stamp"
    [[ -z $extra ]] || target=".[$extra]"
    wanted="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1) $extra"
    if [[ -f $stamp && $(cat "$stamp") == "$wanted" ]]; then
        log "install up to date (pyproject.toml unchanged)"
        return 0
    fi
    log "pip install -e '$target'"
    # pip and the build backend are chatty even with -q: keep their output for failures.
    if ! { "$VENV/bin/python" -m pip install -q --upgrade pip &&
        "$VENV/bin/python" -m pip install -q -e "$ROOT/$target"; } >"$VENV/pip.log" 2>&1; then
        cat "$VENV/pip.log" >&2
        die "pip install failed (log: $VENV/pip.log)"
    fi
    printf '%s\n' "$wanted" >"$stamp"
}

"""The ``updates`` plugin: pending package updates (apt, dnf or pacman), and opt-in apply.

``check`` (the default) reports the pending count, the security count and up to
10 package names, from the package manager's local metadata: it refreshes
nothing unless ``refresh`` is set. ``apply`` and ``cleanup`` change the system and
run only when the task asks for them; they use ``sudo -S`` when not root (the
server's sudo password secret answers the prompt).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from svrctl.commands import CommandResult
from svrctl.plugin import Metric, Plugin, PluginContext, PluginResult

__all__ = [
    "Pending",
    "UpdatesConfig",
    "UpdatesPlugin",
    "parse_apt",
    "parse_dnf",
    "parse_pacman",
    "split_check",
]

MANAGERS = ("apt", "dnf", "pacman")
_BINARY = {"apt": "apt-get", "dnf": "dnf", "pacman": "pacman"}
_SUDO = 'if [ "$(id -u)" = 0 ]; then S=; else S="sudo -S"; fi; '
_RC = "--svrctl-rc:"
SHOWN = 10

_CHECK = {
    "apt": f"LC_ALL=C apt-get -s -o Debug::NoLocking=1 dist-upgrade; echo {_RC}$?",
    "dnf": f"LC_ALL=C dnf -q -C check-update; echo {_RC}$?; "
    "LC_ALL=C dnf -q -C updateinfo list --security",
    "pacman": f"LC_ALL=C pacman -Qu; echo {_RC}$?",
}
# Exit codes that mean "the check worked" (dnf: 100 = updates; pacman -Qu: 1 = none).
_OK_CODES = {"apt": {0}, "dnf": {0, 100}, "pacman": {0, 1}}
_REFRESH = {
    "apt": "$S apt-get update -qq && ",
    "dnf": "$S dnf -q makecache && ",
    "pacman": "",  # checkupdates refreshes a private copy of the sync database
}
# checkupdates: 0 = updates, 2 = none, 1 = it failed (reported as 98, not an OK code)
_CHECK_REFRESHED = {
    **_CHECK,
    "pacman": f"LC_ALL=C checkupdates; c=$?; [ $c = 2 ] && c=0; [ $c = 1 ] && c=98; echo {_RC}$c",
}
_APPLY = {
    "apt": "$S env DEBIAN_FRONTEND=noninteractive apt-get -y -q "
    "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold dist-upgrade",
    "dnf": "$S dnf -y -q upgrade",
    "pacman": "$S pacman -Syu --noconfirm",
}
_CLEANUP = {
    "apt": "$S apt-get -y -q autoremove && $S apt-get -q clean",
    "dnf": "$S dnf -y -q autoremove && $S dnf -q clean packages",
    "pacman": "$S pacman -Sc --noconfirm",
}


class UpdatesConfig(BaseModel):
    """Settings of the updates plugin."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["check", "apply", "cleanup"] = Field(
        default="check",
        description="check reports; apply installs every pending update; cleanup removes "
        "unneeded packages and cached downloads.",
    )
    manager: Literal["auto", "apt", "dnf", "pacman"] = Field(
        default="auto", description="Package manager; auto picks apt, dnf or pacman."
    )
    refresh: bool = Field(
        default=False, description="Refresh the package lists before checking (uses sudo)."
    )
    max_pending: int | None = Field(
        default=None, ge=0, description="Fail when more updates than this are pending."
    )
    max_security: int | None = Field(
        default=None, ge=0, description="Fail when more security updates than this are pending."
    )
    notify_security: bool = Field(
        default=True, description="Ask to notify when security updates are pending."
    )


@dataclass
class Pending:
    """What a package manager says is pending."""

    manager: str
    packages: list[str] = field(default_factory=list)
    security: int | None = 0  # None: this manager cannot tell

    @property
    def count(self) -> int:
        """Number of packages with a pending update."""
        return len(self.packages)


_APT_INST = re.compile(r"^Inst (\S+) (?:\[[^\]]*\] )?\((.*)\)")


def parse_apt(text: str, _: str = "") -> Pending:
    """Read ``apt-get -s dist-upgrade``: one ``Inst`` line per package to upgrade."""
    found = Pending("apt")
    for line in text.splitlines():
        match = _APT_INST.match(line)
        if match:
            found.packages.append(match.group(1))
            if "-security" in match.group(2).lower():
                found.security = (found.security or 0) + 1
    return found


def split_check(text: str, manager: str) -> tuple[str, str]:
    """Split a check's output at its exit-code marker; ValueError if the check failed."""
    head, marker, rest = text.partition(_RC)
    if not marker:
        raise ValueError("the check printed no exit code")
    code_text, _, tail = rest.partition("\n")
    code = int(code_text.strip() or -1)
    if code not in _OK_CODES[manager]:
        hint = " (not installed?)" if code == 127 else ""
        raise ValueError(f"{_BINARY[manager]} exited {code}{hint}")
    return head, tail


def parse_dnf(text: str, security_text: str = "") -> Pending:
    """Read ``dnf check-update`` and ``dnf updateinfo list --security`` output."""
    check = text
    found = Pending("dnf")
    for line in check.splitlines():
        if line.startswith(("Obsoleting", "Security:", "Last metadata")) or line[:1].isspace():
            if line.startswith("Obsoleting"):
                break
            continue
        words = line.split()
        if len(words) == 3 and "." in words[0]:
            found.packages.append(words[0].rsplit(".", 1)[0])
    advisories = {line.split()[-1] for line in security_text.splitlines() if len(line.split()) >= 3}
    found.security = len(advisories)
    return found


def parse_pacman(text: str, _: str = "") -> Pending:
    """Read ``pacman -Qu`` / ``checkupdates``: ``name old -> new`` per package."""
    found = Pending("pacman", security=None)
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 4 and words[2] == "->":
            found.packages.append(words[0])
    return found


_PARSERS = {"apt": parse_apt, "dnf": parse_dnf, "pacman": parse_pacman}


def _detect(ctx: PluginContext) -> str | None:
    script = "; ".join(
        f"command -v {_BINARY[m]} >/dev/null 2>&1 && {{ echo {m}; exit 0; }}" for m in MANAGERS
    )
    result = ctx.runner.run(script + "; exit 3", timeout=ctx.timeout)
    name = result.stdout.strip()
    return name if result.success and name in MANAGERS else None


def _failed(ctx: PluginContext, what: str, result: CommandResult) -> PluginResult:
    reason = result.error_text or f"exit code {result.exit_code}"
    tail = (result.stderr or result.stdout)[-2000:]
    return PluginResult(
        success=False,
        summary=f"updates: {what} failed on {ctx.runner.name}: {reason}",
        details=f"```\n{tail}\n```" if tail else "",
        notify=True,
        priority=7,
    )


class UpdatesPlugin(Plugin):
    """Report pending package updates; apply them or clean up only when asked."""

    name = "updates"
    description = (
        "Pending package updates with apt, dnf or pacman (count, security count, names); "
        "opt-in apply and cleanup."
    )
    config_model = UpdatesConfig
    actions = ("check", "apply", "cleanup")

    def run(self, ctx: PluginContext, config: BaseModel) -> PluginResult:
        """Check, apply or clean up, as the config's action says."""
        assert isinstance(config, UpdatesConfig)
        manager = config.manager if config.manager != "auto" else _detect(ctx)
        if manager is None:
            return PluginResult(
                success=False,
                summary=f"updates: no apt-get, dnf or pacman on {ctx.runner.name}; "
                "set the config's manager if it is installed off the PATH",
                notify=True,
            )
        if config.action == "check":
            return self._check(ctx, config, manager)
        script = (_APPLY if config.action == "apply" else _CLEANUP)[manager]
        ctx.log.info("updates: %s with %s on %s", config.action, manager, ctx.runner.name)
        result = ctx.runner.run(_SUDO + script, timeout=ctx.timeout)
        if not result.success:
            return _failed(ctx, config.action, result)
        tail = result.stdout[-4000:]
        return PluginResult(
            success=True,
            summary=f"{ctx.runner.name}: {config.action} with {manager} done",
            details=f"```\n{tail}\n```" if tail else "",
        )

    def _check(self, ctx: PluginContext, config: UpdatesConfig, manager: str) -> PluginResult:
        check = (_CHECK_REFRESHED if config.refresh else _CHECK)[manager]
        script = (_SUDO + _REFRESH[manager] if config.refresh else "") + check
        result = ctx.runner.run(script, timeout=ctx.timeout)
        if result.exit_code is None or not result.success:
            return _failed(ctx, "check", result)
        try:
            found = _PARSERS[manager](*split_check(result.stdout, manager))
        except ValueError as exc:
            return _failed(ctx, f"check ({exc})", result)
        return _report(ctx, config, found)


def _report(ctx: PluginContext, config: UpdatesConfig, found: Pending) -> PluginResult:
    """Turn what is pending into the run's result, thresholds and notification."""
    problems = []
    if config.max_pending is not None and found.count > config.max_pending:
        problems.append(f"{found.count} updates pending (more than {config.max_pending})")
    if (
        config.max_security is not None
        and found.security is not None
        and found.security > config.max_security
    ):
        problems.append(
            f"{found.security} security updates pending (more than {config.max_security})"
        )
    security = "unknown" if found.security is None else str(found.security)
    names = ", ".join(found.packages[:SHOWN]) + (" …" if found.count > SHOWN else "")
    summary = f"{ctx.runner.name}: {found.count} updates pending ({security} security)" + (
        f": {names}" if names else ""
    )
    if problems:
        summary = f"{ctx.runner.name}: " + "; ".join(problems)
    metrics = [Metric(name="updates_pending", value=found.count, labels={"manager": found.manager})]
    if found.security is not None:
        metrics.append(
            Metric(name="updates_security", value=found.security, labels={"manager": found.manager})
        )
    details = "\n".join(
        [
            f"| manager | {found.manager} |",
            "|---|---|",
            f"| pending | {found.count} |",
            f"| security | {security} |",
            *(f"| package | `{p.replace('|', '')}` |" for p in found.packages[:SHOWN]),
        ]
    )
    wants = bool(problems) or (config.notify_security and bool(found.security))
    return PluginResult(
        success=not problems,
        summary=summary,
        details=details,
        metrics=metrics,
        notify=wants,
        priority=8 if found.security else 5,
    )


PLUGIN = UpdatesPlugin

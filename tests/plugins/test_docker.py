"""The ``docker`` plugin through a stand-in ``docker`` executable first on PATH.

No Docker engine runs here: the stand-in prints recorded real-format output of
the docker CLI's ``--format '{{json .}}'`` for the command it is given (the seam
is the command line), and logs every call so tests can prove nothing deletes.
"""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from standins import bare_path, run_plugin

from svrctl.exceptions import BadInputError
from svrctl.plugin import PluginResult, get_plugin, validate_config
from svrctl.plugins.docker import ignored, parse_size

PS = [
    {"Command": '"/docker-entrypoint.sh nginx -g \'daemon off;\'"', "CreatedAt": "2026-11-01 10:00:00 +0000 UTC", "ID": "a1", "Image": "nginx:1.25", "Labels": "", "LocalVolumes": "0", "Mounts": "", "Names": "web", "Networks": "bridge", "Ports": "0.0.0.0:80->80/tcp", "RunningFor": "3 weeks ago", "Size": "0B", "State": "running", "Status": "Up 3 weeks (healthy)"},
    {"Command": '"docker-entrypoint.sh postgres"', "CreatedAt": "2026-11-01 10:00:00 +0000 UTC", "ID": "b2", "Image": "postgres:16", "Labels": "", "LocalVolumes": "1", "Mounts": "pgdata", "Names": "db", "Networks": "bridge", "Ports": "5432/tcp", "RunningFor": "3 weeks ago", "Size": "0B", "State": "running", "Status": "Up 2 hours (unhealthy)"},
    {"Command": '"/bin/sh -c backup.sh"', "CreatedAt": "2026-11-20 03:00:00 +0000 UTC", "ID": "c3", "Image": "alpine:3.19", "Labels": "", "LocalVolumes": "0", "Mounts": "", "Names": "backup", "Networks": "bridge", "Ports": "", "RunningFor": "6 days ago", "Size": "0B", "State": "exited", "Status": "Exited (1) 6 days ago"},
    {"Command": '"/app/worker"', "CreatedAt": "2026-11-25 08:00:00 +0000 UTC", "ID": "d4", "Image": "acme/worker:2", "Labels": "", "LocalVolumes": "0", "Mounts": "", "Names": "worker-1", "Networks": "bridge", "Ports": "", "RunningFor": "1 day ago", "Size": "0B", "State": "restarting", "Status": "Restarting (137) 5 seconds ago"},
    {"Command": '"/cache"', "CreatedAt": "2026-11-25 08:00:00 +0000 UTC", "ID": "e5", "Image": "redis:7", "Labels": "", "LocalVolumes": "0", "Mounts": "", "Names": "cache", "Networks": "bridge", "Ports": "6379/tcp", "RunningFor": "1 day ago", "Size": "0B", "State": "running", "Status": "Up 1 day"},
]  # fmt: skip
STATS = [
    {"BlockIO": "0B / 0B", "CPUPerc": "0.05%", "Container": "a1", "ID": "a1", "MemPerc": "0.15%", "MemUsage": "11.6MiB / 7.6GiB", "Name": "web", "NetIO": "1.2kB / 0B", "PIDs": "3"},
    {"BlockIO": "1MB / 2MB", "CPUPerc": "3.20%", "Container": "b2", "ID": "b2", "MemPerc": "91.40%", "MemUsage": "7GiB / 7.6GiB", "Name": "db", "NetIO": "5kB / 9kB", "PIDs": "12"},
    {"BlockIO": "0B / 0B", "CPUPerc": "187.50%", "Container": "e5", "ID": "e5", "MemPerc": "2.00%", "MemUsage": "150MiB / 7.6GiB", "Name": "cache", "NetIO": "0B / 0B", "PIDs": "5"},
]  # fmt: skip
DF = [
    {"Active": "3", "Reclaimable": "1.2GB (45%)", "Size": "2.6GB", "TotalCount": "7", "Type": "Images"},
    {"Active": "3", "Reclaimable": "12kB (50%)", "Size": "24kB", "TotalCount": "5", "Type": "Containers"},
    {"Active": "1", "Reclaimable": "100MB (50%)", "Size": "200MB", "TotalCount": "2", "Type": "Local Volumes"},
    {"Active": "0", "Reclaimable": "512MB", "Size": "512MB", "TotalCount": "14", "Type": "Build Cache"},
]  # fmt: skip
DANGLING = [{"Containers": "N/A", "CreatedAt": "2026-10-01 09:00:00 +0000 UTC", "CreatedSince": "8 weeks ago", "Digest": "<none>", "ID": "sha256:9f8e7d6c5b4a", "Repository": "<none>", "SharedSize": "N/A", "Size": "310MB", "Tag": "<none>", "UniqueSize": "N/A", "VirtualSize": "310MB"}]  # fmt: skip
VOLUMES = [{"Driver": "local", "Labels": "", "Links": "N/A", "Mountpoint": "/var/lib/docker/volumes/old/_data", "Name": "old", "Scope": "local", "Size": "N/A"}]  # fmt: skip


def _image(repo: str, tag: str, image_id: str, days_old: int, size: str) -> dict[str, str]:
    created = datetime.now(UTC) - timedelta(days=days_old)
    return {
        "Containers": "N/A",
        "CreatedAt": created.strftime("%Y-%m-%d %H:%M:%S +0000 UTC"),
        "CreatedSince": f"{days_old} days ago",
        "Digest": "<none>",
        "ID": image_id,
        "Repository": repo,
        "SharedSize": "N/A",
        "Size": size,
        "Tag": tag,
        "UniqueSize": "N/A",
        "VirtualSize": size,
    }


IMAGES = [
    _image("nginx", "1.25", "sha256:aaaaaaaaaaaa1111", 200, "187MB"),  # used by web
    _image("node", "18", "sha256:bbbbbbbbbbbb2222", 200, "1.1GB"),  # unused, old
    _image("node", "20", "sha256:cccccccccccc3333", 10, "1.1GB"),  # unused, recent
]


def _jsonl(rows: list[dict[str, str]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.fixture
def docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Install the stand-in ``docker`` first on PATH; return its call log."""
    bindir = tmp_path / "bin"
    data = tmp_path / "data"
    bindir.mkdir()
    data.mkdir()
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "web.log").write_bytes(b"x" * 2_000_000)
    (logs / "db.log").write_bytes(b"x" * 10)
    files = {
        "ps.json": _jsonl(PS),
        "exited.json": _jsonl([c for c in PS if c["State"] == "exited"]),
        "stats.json": _jsonl(STATS),
        "df.json": _jsonl(DF),
        "dangling.json": _jsonl(DANGLING),
        "volumes.json": _jsonl(VOLUMES),
        "images.json": _jsonl(IMAGES),
        "used.txt": "".join(c["Image"] + "\n" for c in PS),
    }
    for name, text in files.items():
        (data / name).write_text(text)
    log = tmp_path / "calls.log"
    script = f"""#!/bin/sh
echo "docker $*" >> {log}
d={data}
case "$*" in
  "ps -a --no-trunc --format {{{{json .}}}}") cat $d/ps.json;;
  "ps -a --filter status=exited --format {{{{json .}}}}") cat $d/exited.json;;
  "ps -a --format {{{{.Image}}}}") cat $d/used.txt;;
  "ps -aq") echo a1; echo b2;;
  "stats --no-stream --format {{{{json .}}}}") cat $d/stats.json;;
  "system df --format {{{{json .}}}}") cat $d/df.json;;
  "images --filter dangling=true --format {{{{json .}}}}") cat $d/dangling.json;;
  "images --format {{{{json .}}}}") cat $d/images.json;;
  "volume ls --filter dangling=true --format {{{{json .}}}}") cat $d/volumes.json;;
  "inspect --format {{{{.Name}}}}|{{{{.LogPath}}}} a1") echo "/web|{logs}/web.log";;
  "inspect --format {{{{.Name}}}}|{{{{.LogPath}}}} b2") echo "/db|{logs}/db.log";;
  *) echo "unexpected docker call: $*" >&2; exit 64;;
esac
"""
    path = bindir / "docker"
    path.write_text(script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    return log


def _run(config: dict[str, object]) -> PluginResult:
    return run_plugin("docker", config)


def _no_deletes(log: Path) -> None:
    for call in log.read_text().splitlines():
        assert not any(w in call.split() for w in ("rm", "rmi", "prune", "kill", "stop")), call


def test_health_reports_stopped_unhealthy_restarting_and_usage(docker: Path) -> None:
    result = _run({})
    assert not result.success and result.notify
    issues = result.summary.split(": ", 1)[1]
    assert issues.startswith("5 docker issue(s): ")
    for expected in (
        "db is unhealthy (Up 2 hours (unhealthy))",
        "db uses 91.4% memory (over 80%)",
        "backup is stopped (Exited (1) 6 days ago)",
        "worker-1 is restarting (Restarting (137) 5 seconds ago)",
        "cache uses 187.5% CPU (over 80%)",
    ):
        assert expected in result.details, expected
    assert "| web | running | Up 3 weeks (healthy) | 0.1% | 0.1% |" in result.details
    values = {(m.name, m.labels.get("container")): m.value for m in result.metrics}
    assert values[("container_memory_percent", "db")] == 91.4
    assert values[("containers_running", None)] == 3
    _no_deletes(docker)


def test_ignore_list_with_a_trailing_star(docker: Path) -> None:
    result = _run({"ignore": ["worker-*", "backup", "db", "cache"]})
    assert result.success, result.summary
    assert result.summary == "here: 1 of 1 containers running, all healthy"
    assert ignored("worker-7", ["worker-*"]) and not ignored("worker", ["worker-*"])
    assert not ignored("db-1", ["db"])


def test_thresholds_can_be_raised_or_turned_off(docker: Path) -> None:
    result = _run({"cpu_percent": 200, "memory_percent": None, "ignore": ["backup", "worker-*"]})
    assert result.summary == "here: 1 docker issue(s): db is unhealthy (Up 2 hours (unhealthy))"


def test_cleanup_report_lists_reclaimable_space_and_deletes_nothing(docker: Path) -> None:
    result = _run({"action": "cleanup-report"})
    assert result.success and not result.notify
    total = 1.2e9 + 12e3 + 100e6 + 512e6
    assert result.summary == (
        "here: 1.8 GB reclaimable (1 dangling images, 1 unused volumes, "
        "1 stopped containers); nothing was deleted"
    )
    assert {m.labels["type"]: m.value for m in result.metrics}["total"] == pytest.approx(total)
    assert "| Build Cache | 14 | 0 | 512MB | 512MB |" in result.details
    assert "- old" in result.details and "backup (Exited (1) 6 days ago)" in result.details
    _no_deletes(docker)


def test_analysis_finds_old_unused_images_and_big_logs(docker: Path) -> None:
    result = _run({"action": "analysis", "unused_days": 90, "log_size_mb": 1})
    assert result.summary == ("here: 1 images unused for 90+ days, 1 container logs over 1 MB")
    assert "- node:18 (1.1GB)" in result.details
    assert "node:20" not in result.details and "nginx" not in result.details
    assert "- web: 2.0 MB" in result.details and "db:" not in result.details
    assert result.notify
    _no_deletes(docker)


def test_missing_docker_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bare_path(tmp_path, monkeypatch)
    result = _run({})
    assert not result.success
    assert result.summary.startswith("docker: the docker CLI is not installed on here")


def test_daemon_down_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    path = bindir / "docker"
    path.write_text(
        "#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
        "Is the docker daemon running?' >&2\nexit 1\n"
    )
    path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    result = _run({})
    assert not result.success
    assert result.summary.startswith("docker: Cannot connect to the Docker daemon")
    assert "(is the docker daemon running?) on here" in result.summary


def test_parse_size() -> None:
    assert parse_size("1.2GB (45%)") == 1.2e9
    assert parse_size("11.6MiB") == pytest.approx(11.6 * 1024**2)
    assert parse_size("0B") == 0 and parse_size("N/A") == 0


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"action": "prune"}, "action"),
        ({"cpu_percent": 0}, "cpu_percent"),
        ({"memory_percent": 120}, "memory_percent"),
        ({"unused_days": 0}, "unused_days"),
        ({"ignore": "web"}, "ignore"),
    ],
)
def test_bad_config_names_the_field(config: dict[str, object], field: str) -> None:
    with pytest.raises(BadInputError) as info:
        validate_config(get_plugin("docker"), config)
    assert info.value.field == f"plugin_config.{field}"

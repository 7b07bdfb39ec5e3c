"""The ``docker`` plugin: container health, reclaimable space, and unused images and big logs.

Everything goes through the ``docker`` CLI on the target with JSON output
formats. ``health`` reports stopped, unhealthy and restarting containers and CPU
or memory over thresholds; ``cleanup-report`` lists reclaimable space;
``analysis`` finds images unused for N days and container logs over a size.
No action deletes anything.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from svrctl.commands import CommandResult
from svrctl.plugin import (
    Metric,
    Plugin,
    PluginContext,
    PluginResult,
    section_script,
    split_sections,
)

__all__ = ["DockerConfig", "DockerPlugin", "ignored", "parse_json_lines", "parse_size"]

_MISSING = "--svrctl-docker-missing"
_GUARD = f"command -v docker >/dev/null 2>&1 || {{ echo {_MISSING}; exit 0; }}; "
_FORMAT = "'{{json .}}'"
SHOWN = 20

_SIZE_RE = re.compile(r"^\s*([\d.]+)\s*([kKMGTP]?i?B)?")
_SIZE_UNITS = {
    "B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "PB": 1e15,
    "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4, "PiB": 1024**5,
}  # fmt: skip


class DockerConfig(BaseModel):
    """Settings of the docker plugin."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["health", "cleanup-report", "analysis"] = Field(
        default="health",
        description="health: container states and usage; cleanup-report: reclaimable "
        "space; analysis: unused images and big logs. Nothing is ever deleted.",
    )
    cpu_percent: float | None = Field(
        default=80, gt=0, description="health: flag a container using more CPU (percent)."
    )
    memory_percent: float | None = Field(
        default=80, gt=0, le=100, description="health: flag a container using more memory."
    )
    ignore: list[str] = Field(
        default_factory=list,
        description="health: container names to leave out; a trailing * matches a prefix.",
    )
    unused_days: int = Field(
        default=90, ge=1, description="analysis: images no container uses, older than this."
    )
    log_size_mb: float = Field(
        default=100, gt=0, description="analysis: container logs bigger than this (MB)."
    )


def parse_json_lines(lines: list[str]) -> list[dict[str, Any]]:
    """Read one JSON object per line (docker's ``--format '{{json .}}'``)."""
    out = []
    for line in lines:
        line = line.strip()
        if line:
            value = json.loads(line)
            if isinstance(value, dict):
                out.append(value)
    return out


def parse_size(text: str) -> float:
    """Turn docker's sizes (``1.2GB``, ``11.6MiB``, ``0B``) into bytes."""
    match = _SIZE_RE.match(text or "")
    if not match:
        return 0.0
    return float(match.group(1)) * _SIZE_UNITS.get(match.group(2) or "B", 1)


def _percent(text: str) -> float:
    try:
        return float(str(text).strip().rstrip("%") or 0)
    except ValueError:
        return 0.0


def ignored(name: str, patterns: list[str]) -> bool:
    """Tell whether a container name matches the ignore list (a trailing * is a prefix)."""
    return any(name.startswith(p[:-1]) if p.endswith("*") else name == p for p in patterns)


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


class DockerPlugin(Plugin):
    """Check containers, report reclaimable space, or find unused images and big logs."""

    name = "docker"
    description = (
        "Container health (stopped, unhealthy, restarting, CPU/memory over thresholds), "
        "reclaimable space, unused images and big logs, through the docker CLI. Never deletes."
    )
    config_model = DockerConfig
    actions = ("health", "cleanup-report", "analysis")

    def run(self, ctx: PluginContext, config: BaseModel) -> PluginResult:
        """Run the configured action on the target's docker."""
        assert isinstance(config, DockerConfig)
        parts = {
            "health": {
                "ps": f"docker ps -a --no-trunc --format {_FORMAT}",
                "stats": f"docker stats --no-stream --format {_FORMAT}",
            },
            "cleanup-report": {
                "df": f"docker system df --format {_FORMAT}",
                "dangling": f"docker images --filter dangling=true --format {_FORMAT}",
                "volumes": f"docker volume ls --filter dangling=true --format {_FORMAT}",
                "ps": f"docker ps -a --filter status=exited --format {_FORMAT}",
            },
            "analysis": {
                "images": f"docker images --format {_FORMAT}",
                "used": "docker ps -a --format '{{.Image}}'",
                "logs": "for c in $(docker ps -aq); do "
                "docker inspect --format '{{.Name}}|{{.LogPath}}' \"$c\" | "
                'while IFS="|" read -r n p; do '
                's=$(stat -c %s "$p" 2>/dev/null || echo 0); echo "${n#/}|$s"; done; done',
            },
        }[config.action]
        # Each docker call must succeed: a daemon that is down fails the first one.
        script = _GUARD + "set -e; " + section_script(parts)
        result = ctx.runner.run(script, timeout=ctx.timeout)
        if _MISSING in result.stdout:
            return PluginResult(
                success=False,
                summary=f"docker: the docker CLI is not installed on {ctx.runner.name} "
                "(or not on the PATH of the login user)",
                notify=True,
                priority=6,
            )
        if not result.success:
            return _failed(ctx, result)
        try:
            sections = split_sections(result.stdout, parts)
            if config.action == "health":
                return _health(ctx, config, sections)
            if config.action == "cleanup-report":
                return _cleanup_report(ctx, sections)
            return _analysis(ctx, config, sections)
        except (ValueError, json.JSONDecodeError) as exc:
            return PluginResult(
                success=False,
                summary=f"docker: unexpected output from docker on {ctx.runner.name}: {exc}",
                notify=True,
            )


def _failed(ctx: PluginContext, result: CommandResult) -> PluginResult:
    reason = next(
        (line.strip() for line in result.stderr.splitlines() if line.strip()),
        result.error_text or f"exit code {result.exit_code}",
    )
    hint = ""
    if "permission denied" in reason.lower():
        hint = " (add the login user to the docker group, or log in as root)"
    elif "cannot connect" in reason.lower():
        hint = " (is the docker daemon running?)"
    return PluginResult(
        success=False,
        summary=f"docker: {reason}{hint} on {ctx.runner.name}",
        details=f"```\n{result.stderr[-2000:]}\n```" if result.stderr else "",
        notify=True,
        priority=6,
    )


def _health(ctx: PluginContext, config: DockerConfig, sec: dict[str, list[str]]) -> PluginResult:
    containers = [
        c
        for c in parse_json_lines(sec["ps"])
        if not ignored(str(c.get("Names", "")), config.ignore)
    ]
    stats = {str(s.get("Name", "")): s for s in parse_json_lines(sec["stats"])}
    issues: list[str] = []
    rows = ["| container | state | status | CPU | memory |", "|---|---|---|---|---|"]
    metrics: list[Metric] = []
    running = 0
    for c in containers:
        name, state, status = (
            str(c.get("Names", "")),
            str(c.get("State", "")),
            str(c.get("Status", "")),
        )
        st = stats.get(name, {})
        cpu, mem = _percent(st.get("CPUPerc", "0")), _percent(st.get("MemPerc", "0"))
        if state in {"exited", "dead", "created"}:
            issues.append(f"{name} is stopped ({status})")
        elif state == "restarting":
            issues.append(f"{name} is restarting ({status})")
        elif "(unhealthy)" in status:
            issues.append(f"{name} is unhealthy ({status})")
        if state == "running":
            running += 1
            labels = {"container": name}
            metrics.append(Metric(name="container_cpu_percent", value=cpu, unit="%", labels=labels))
            metrics.append(
                Metric(name="container_memory_percent", value=mem, unit="%", labels=labels)
            )
            if config.cpu_percent is not None and cpu > config.cpu_percent:
                issues.append(f"{name} uses {cpu:.1f}% CPU (over {config.cpu_percent:g}%)")
            if config.memory_percent is not None and mem > config.memory_percent:
                issues.append(f"{name} uses {mem:.1f}% memory (over {config.memory_percent:g}%)")
        rows.append(
            f"| {_cell(name)} | {_cell(state)} | {_cell(status)} | {cpu:.1f}% | {mem:.1f}% |"
        )
    metrics.append(Metric(name="containers_running", value=running))
    metrics.append(Metric(name="containers_total", value=len(containers)))
    head = ["**Issues:**", *[f"- {_cell(i)}" for i in issues], ""] if issues else []
    if issues:
        summary = f"{ctx.runner.name}: {len(issues)} docker issue(s): " + "; ".join(issues[:5])
    else:
        summary = (
            f"{ctx.runner.name}: {running} of {len(containers)} containers running, all healthy"
        )
    return PluginResult(
        success=not issues,
        summary=summary,
        details="\n".join([*head, *rows]),
        metrics=metrics,
        notify=bool(issues),
        priority=7 if issues else 5,
    )


def _cleanup_report(ctx: PluginContext, sec: dict[str, list[str]]) -> PluginResult:
    rows = ["| type | total | active | size | reclaimable |", "|---|---|---|---|---|"]
    metrics: list[Metric] = []
    total = 0.0
    for d in parse_json_lines(sec["df"]):
        kind = str(d.get("Type", ""))
        reclaim = parse_size(str(d.get("Reclaimable", "0B")))
        total += reclaim
        rows.append(
            f"| {_cell(kind)} | {_cell(d.get('TotalCount', ''))} | {_cell(d.get('Active', ''))} "
            f"| {_cell(d.get('Size', ''))} | {_cell(d.get('Reclaimable', ''))} |"
        )
        key = kind.lower().replace(" ", "_")
        metrics.append(
            Metric(name="reclaimable_bytes", value=reclaim, unit="bytes", labels={"type": key})
        )
    dangling = parse_json_lines(sec["dangling"])
    volumes = parse_json_lines(sec["volumes"])
    stopped = parse_json_lines(sec["ps"])
    lists = [
        ("Dangling images", [f"{i.get('ID', '')} ({i.get('Size', '')})" for i in dangling]),
        ("Unused volumes", [str(v.get("Name", "")) for v in volumes]),
        ("Stopped containers", [f"{c.get('Names', '')} ({c.get('Status', '')})" for c in stopped]),
    ]
    for title, items in lists:
        if items:
            rows += ["", f"**{title}** ({len(items)}):", *[f"- {_cell(x)}" for x in items[:SHOWN]]]
    metrics.append(
        Metric(name="reclaimable_bytes", value=total, unit="bytes", labels={"type": "total"})
    )
    return PluginResult(
        success=True,
        summary=f"{ctx.runner.name}: {_human(total)} reclaimable ({len(dangling)} dangling images, "
        f"{len(volumes)} unused volumes, {len(stopped)} stopped containers); nothing was deleted",
        details="\n".join(rows),
        metrics=metrics,
    )


def _created(text: str) -> datetime | None:
    """Parse docker's ``2023-08-01 12:00:00 +0000 UTC`` time."""
    try:
        return datetime.strptime(" ".join(text.split()[:3]), "%Y-%m-%d %H:%M:%S %z")
    except ValueError:
        return None


def _analysis(ctx: PluginContext, config: DockerConfig, sec: dict[str, list[str]]) -> PluginResult:
    used = {line.strip() for line in sec["used"] if line.strip()}
    cutoff = datetime.now(UTC) - timedelta(days=config.unused_days)
    old: list[tuple[str, str]] = []
    for image in parse_json_lines(sec["images"]):
        ref = f"{image.get('Repository', '')}:{image.get('Tag', '')}"
        image_id = str(image.get("ID", ""))
        short = image_id.removeprefix("sha256:")[:12]
        in_use = ref in used or image_id in used or short in used
        if image.get("Tag") == "latest":
            in_use = in_use or str(image.get("Repository", "")) in used
        created = _created(str(image.get("CreatedAt", "")))
        if not in_use and created is not None and created < cutoff:
            old.append((ref if "<none>" not in ref else short, str(image.get("Size", ""))))
    big: list[tuple[str, int]] = []
    for line in sec["logs"]:
        name, _, size = line.rpartition("|")
        if name and size.strip().isdigit() and int(size) > config.log_size_mb * 1e6:
            big.append((name, int(size)))
    rows = [f"**Images unused for {config.unused_days}+ days** ({len(old)}):"]
    rows += [f"- {_cell(ref)} ({_cell(size)})" for ref, size in old[:SHOWN]] or ["- none"]
    rows += ["", f"**Container logs over {config.log_size_mb:g} MB** ({len(big)}):"]
    rows += [f"- {_cell(n)}: {_human(s)}" for n, s in big[:SHOWN]] or ["- none"]
    findings = len(old) + len(big)
    return PluginResult(
        success=True,
        summary=f"{ctx.runner.name}: {len(old)} images unused for {config.unused_days}+ days, "
        f"{len(big)} container logs over {config.log_size_mb:g} MB",
        details="\n".join(rows),
        metrics=[
            Metric(name="images_unused", value=len(old)),
            Metric(name="logs_oversized", value=len(big)),
        ],
        notify=findings > 0,
        priority=4,
    )


PLUGIN = DockerPlugin

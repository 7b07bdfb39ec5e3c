"""The ``health`` plugin: CPU, load, memory, swap, filesystems and uptime of a target.

Everything is read in one command through the context's runner (one SSH round
trip): two samples of ``/proc/stat`` a short time apart, ``/proc/loadavg``, the
core count, ``/proc/meminfo``, ``/proc/mounts``, ``df -P -k`` and
``/proc/uptime``. Thresholds make the run fail and ask to notify, naming what
crossed and by how much.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from svrctl.plugin import (
    Metric,
    Plugin,
    PluginContext,
    PluginResult,
    section_script,
    split_sections,
)

__all__ = ["HealthConfig", "HealthPlugin", "Snapshot", "parse_snapshot"]

# Filesystem types that hold no user data (kernel views, memory-backed, images).
PSEUDO_FS = frozenset(
    {
        "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs",
        "devpts", "devtmpfs", "efivarfs", "fuse.lxcfs", "fuse.portal", "fusectl",
        "hugetlbfs", "mqueue", "nsfs", "overlay", "proc", "pstore", "ramfs",
        "rpc_pipefs", "securityfs", "squashfs", "sysfs", "tmpfs", "tracefs", "nfsd",
    }
)  # fmt: skip
_SECTIONS = ("stat1", "stat2", "loadavg", "nproc", "meminfo", "mounts", "df", "uptime")


class HealthConfig(BaseModel):
    """Settings of the health plugin: thresholds (percent) and the CPU sample length."""

    model_config = ConfigDict(extra="forbid")

    cpu_percent: float | None = Field(
        default=None, gt=0, le=100, description="Fail when CPU usage is above this (percent)."
    )
    memory_percent: float | None = Field(
        default=None, gt=0, le=100, description="Fail when memory in use is above this (percent)."
    )
    disk_percent: float | None = Field(
        default=None,
        gt=0,
        le=100,
        description="Fail when any real filesystem is fuller than this (percent).",
    )
    sample_seconds: float = Field(
        default=1.0, ge=0.1, le=10, description="How long CPU usage is sampled."
    )
    ignore_mounts: list[str] = Field(
        default_factory=list,
        description="Mount points left out of the disk check; a trailing * matches a prefix.",
    )


@dataclass
class Filesystem:
    """Usage of one mounted filesystem."""

    mount: str
    device: str
    fstype: str
    total_bytes: int
    used_bytes: int

    @property
    def used_percent(self) -> float:
        """Share of the filesystem in use, as ``df`` counts it (used / (used + avail))."""
        return 100.0 * self.used_bytes / self.total_bytes if self.total_bytes else 0.0


@dataclass
class Snapshot:
    """One reading of a target's health."""

    cpu_percent: float
    load: tuple[float, float, float]
    cores: int
    memory_total: int
    memory_available: int
    swap_total: int
    swap_free: int
    uptime_seconds: float
    filesystems: list[Filesystem] = field(default_factory=list)

    @property
    def memory_percent(self) -> float:
        """Memory in use (total minus available), percent."""
        used = self.memory_total - self.memory_available
        return 100.0 * used / self.memory_total if self.memory_total else 0.0

    @property
    def swap_percent(self) -> float:
        """Swap in use, percent (0 without swap)."""
        used = self.swap_total - self.swap_free
        return 100.0 * used / self.swap_total if self.swap_total else 0.0


def _command(sample_seconds: float) -> str:
    """Return the one shell command that reads everything."""
    reads = {
        "stat1": "head -n 1 /proc/stat",
        "stat2": f"sleep {sample_seconds:g}; head -n 1 /proc/stat",
        "loadavg": "cat /proc/loadavg",
        "nproc": "nproc 2>/dev/null || grep -c ^processor /proc/cpuinfo",
        "meminfo": "cat /proc/meminfo",
        "mounts": "cat /proc/mounts",
        "df": "df -P -k",
        "uptime": "cat /proc/uptime",
    }
    return "LC_ALL=C; export LC_ALL; " + section_script(reads)


def _cpu_times(line: str) -> tuple[int, int]:
    """Return (busy, total) jiffies from the ``cpu`` line of /proc/stat."""
    fields = line.split()
    if not fields or fields[0] != "cpu":
        raise ValueError(f"unexpected /proc/stat line: {line!r}")
    values = [int(v) for v in fields[1:]]
    # user nice system idle iowait irq softirq steal (guest counts are in user/nice)
    values = (values + [0] * 8)[:8]
    idle = values[3] + values[4]
    total = sum(values)
    return total - idle, total


def _meminfo(lines: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in lines:
        key, _, rest = line.partition(":")
        words = rest.split()
        if words and words[0].isdigit():
            out[key.strip()] = int(words[0]) * (1024 if words[1:2] == ["kB"] else 1)
    return out


def _filesystems(mounts: list[str], df: list[str]) -> list[Filesystem]:
    types: dict[str, str] = {}
    for line in mounts:
        words = line.split()
        if len(words) >= 3:
            types[words[1].replace("\\040", " ")] = words[2]
    found: list[Filesystem] = []
    for line in df[1:]:
        words = line.split()
        if len(words) < 6 or not words[1].isdigit():
            continue
        device, mount = words[0], " ".join(words[5:])
        fstype = types.get(mount, "")
        pseudo = fstype in PSEUDO_FS and not (fstype == "overlay" and mount == "/")
        total, used, avail = int(words[1]) * 1024, int(words[2]) * 1024, int(words[3]) * 1024
        if pseudo or total == 0:
            continue
        found.append(Filesystem(mount, device, fstype, used + avail, used))
    return found


def parse_snapshot(text: str) -> Snapshot:
    """Turn the output of the health command into a snapshot (ValueError if malformed)."""
    sec = split_sections(text, _SECTIONS)
    busy1, total1 = _cpu_times(sec["stat1"][0] if sec["stat1"] else "")
    busy2, total2 = _cpu_times(sec["stat2"][0] if sec["stat2"] else "")
    spent = total2 - total1
    cpu = 100.0 * (busy2 - busy1) / spent if spent > 0 else 0.0
    load_words = (sec["loadavg"] or [""])[0].split()
    if len(load_words) < 3:
        raise ValueError("unexpected /proc/loadavg")
    mem = _meminfo(sec["meminfo"])
    if "MemTotal" not in mem:
        raise ValueError("/proc/meminfo has no MemTotal")
    available = mem.get("MemAvailable", mem.get("MemFree", 0) + mem.get("Cached", 0))
    return Snapshot(
        cpu_percent=max(0.0, min(100.0, cpu)),
        load=(float(load_words[0]), float(load_words[1]), float(load_words[2])),
        cores=int((sec["nproc"] or ["1"])[0].strip() or 1),
        memory_total=mem["MemTotal"],
        memory_available=available,
        swap_total=mem.get("SwapTotal", 0),
        swap_free=mem.get("SwapFree", 0),
        uptime_seconds=float((sec["uptime"] or ["0"])[0].split()[0]),
        filesystems=_filesystems(sec["mounts"], sec["df"]),
    )


def _ignored(mount: str, patterns: list[str]) -> bool:
    return any(mount.startswith(p[:-1]) if p.endswith("*") else mount == p for p in patterns)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _duration(seconds: float) -> str:
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    return f"{days}d {hours}h {rest // 60}m" if days else f"{hours}h {rest // 60}m"


def _crossings(snap: Snapshot, config: HealthConfig) -> list[str]:
    """Say which thresholds were crossed, and by how much."""
    out: list[str] = []
    checks = [("CPU", snap.cpu_percent, config.cpu_percent)]
    checks.append(("memory", snap.memory_percent, config.memory_percent))
    for fs in snap.filesystems:
        if not _ignored(fs.mount, config.ignore_mounts):
            checks.append((f"disk {fs.mount}", fs.used_percent, config.disk_percent))
    for what, value, limit in checks:
        if limit is not None and value > limit:
            out.append(
                f"{what} at {value:.1f}% is over the {limit:g}% threshold by "
                f"{value - limit:.1f} points"
            )
    return out


def _metrics(snap: Snapshot) -> list[Metric]:
    m = [
        Metric(name="cpu_percent", value=round(snap.cpu_percent, 2), unit="%"),
        Metric(name="load_1", value=snap.load[0]),
        Metric(name="load_5", value=snap.load[1]),
        Metric(name="load_15", value=snap.load[2]),
        Metric(name="cpu_cores", value=snap.cores),
        Metric(name="memory_total", value=snap.memory_total, unit="bytes"),
        Metric(name="memory_percent", value=round(snap.memory_percent, 2), unit="%"),
        Metric(name="swap_total", value=snap.swap_total, unit="bytes"),
        Metric(name="swap_percent", value=round(snap.swap_percent, 2), unit="%"),
        Metric(name="uptime", value=snap.uptime_seconds, unit="s"),
    ]
    for fs in snap.filesystems:
        labels = {"mount": fs.mount, "device": fs.device}
        m.append(
            Metric(name="disk_percent", value=round(fs.used_percent, 2), unit="%", labels=labels)
        )
        m.append(Metric(name="disk_total", value=fs.total_bytes, unit="bytes", labels=labels))
    return m


def _details(snap: Snapshot, crossed: list[str]) -> str:
    rows = [
        "| what | value |",
        "|---|---|",
        f"| CPU | {snap.cpu_percent:.1f}% of {snap.cores} cores |",
        f"| load | {snap.load[0]:.2f} {snap.load[1]:.2f} {snap.load[2]:.2f} |",
        f"| memory | {snap.memory_percent:.1f}% of {_size(snap.memory_total)} |",
        f"| swap | {snap.swap_percent:.1f}% of {_size(snap.swap_total)} |"
        if snap.swap_total
        else "| swap | none |",
        f"| uptime | {_duration(snap.uptime_seconds)} |",
    ]
    rows += [
        f"| disk {fs.mount} | {fs.used_percent:.1f}% of {_size(fs.total_bytes)} |"
        for fs in snap.filesystems
    ]
    head = ["**Over threshold:**", *[f"- {c}" for c in crossed], ""] if crossed else []
    return "\n".join([*head, *rows])


class HealthPlugin(Plugin):
    """Report a target's CPU, load, memory, swap, disks and uptime; check thresholds."""

    name = "health"
    description = (
        "CPU (sampled), load, memory, swap, real filesystems and uptime, with thresholds "
        "that fail the run and notify."
    )
    config_model = HealthConfig

    def run(self, ctx: PluginContext, config: BaseModel) -> PluginResult:
        """Read the target's health in one command and compare it with the thresholds."""
        assert isinstance(config, HealthConfig)
        result = ctx.runner.run(_command(config.sample_seconds), timeout=ctx.timeout)
        if not result.success:
            reason = result.error_text or f"exit code {result.exit_code}"
            return PluginResult(
                success=False,
                summary=f"health: could not read {ctx.runner.name}: {reason}",
                details=result.stderr[-2000:],
                notify=True,
            )
        try:
            snap = parse_snapshot(result.stdout)
        except (ValueError, IndexError) as exc:
            return PluginResult(
                success=False,
                summary=f"health: unexpected output from {ctx.runner.name} (is it Linux?): {exc}",
                notify=True,
            )
        crossed = _crossings(snap, config)
        fullest = max(snap.filesystems, key=lambda f: f.used_percent, default=None)
        disk = f", disk {fullest.used_percent:.0f}% ({fullest.mount})" if fullest else ""
        figures = (
            f"CPU {snap.cpu_percent:.0f}%, load {snap.load[0]:.2f}, "
            f"memory {snap.memory_percent:.0f}%{disk}, up {_duration(snap.uptime_seconds)}"
        )
        summary = (
            f"{ctx.runner.name}: {'; '.join(crossed)}"
            if crossed
            else f"{ctx.runner.name}: {figures}"
        )
        return PluginResult(
            success=not crossed,
            summary=summary,
            details=_details(snap, crossed),
            metrics=_metrics(snap),
            notify=bool(crossed),
            priority=8 if crossed else 5,
        )


PLUGIN = HealthPlugin

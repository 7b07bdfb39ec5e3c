"""The ``speedtest`` plugin: bandwidth, latency and packet loss with Ookla's Speedtest CLI.

It runs ``speedtest --format=json --accept-license --accept-gdpr [--server-id=N]``
through the context's runner, so the test measures the task's target (its server
over SSH, or the worker's own host). The CLI reports bandwidth in bytes per second;
the plugin reports megabits per second (``bandwidth * 8 / 1e6``). Below a configured
minimum the run fails and asks to notify at a higher priority.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from svrctl.plugin import Metric, Plugin, PluginContext, PluginResult

__all__ = ["Speedtest", "SpeedtestConfig", "SpeedtestPlugin", "parse_output"]

INSTALL_URL = "https://www.speedtest.net/apps/cli"
_MISSING = "--svrctl-speedtest:missing"


class SpeedtestConfig(BaseModel):
    """Settings of the speedtest plugin: minimum speeds and an optional server."""

    model_config = ConfigDict(extra="forbid")

    min_down: float | None = Field(
        default=None,
        gt=0,
        description="Fail when the download speed is below this (Mbps); unset: no minimum.",
    )
    min_up: float | None = Field(
        default=None,
        gt=0,
        description="Fail when the upload speed is below this (Mbps); unset: no minimum.",
    )
    server_id: int | None = Field(
        default=None,
        gt=0,
        description="Test against this Speedtest server (ids from `speedtest --servers`); "
        "unset: the CLI picks the nearest.",
    )
    notify: bool = Field(
        default=True,
        description="Ask to notify (at low priority) with every result; results below a "
        "minimum and failures always notify.",
    )


@dataclass
class Speedtest:
    """One Speedtest result, in the units svrctl reports."""

    download_mbps: float
    upload_mbps: float
    ping_ms: float
    jitter_ms: float
    packet_loss: float | None
    isp: str
    server: str
    url: str


def _mbps(section: dict[str, Any]) -> float:
    return float(section["bandwidth"]) * 8 / 1e6


def parse_output(text: str) -> Speedtest:
    """Read the CLI's JSON lines; ValueError with the CLI's own message if there is no result."""
    errors: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        if record.get("type") == "result":
            return _result(record)
        if record.get("type") == "log" and record.get("level") == "error":
            errors.append(str(record.get("message", "")).strip())
    if errors:
        raise ValueError("; ".join(errors))
    tail = text.strip()[-300:]
    raise ValueError(f"no JSON result in its output: {tail!r}" if tail else "it printed nothing")


def _result(record: dict[str, Any]) -> Speedtest:
    try:
        server = record.get("server", {})
        where = ", ".join(str(server[k]) for k in ("location", "country") if server.get(k))
        loss = record.get("packetLoss")
        return Speedtest(
            download_mbps=_mbps(record["download"]),
            upload_mbps=_mbps(record["upload"]),
            ping_ms=float(record["ping"]["latency"]),
            jitter_ms=float(record["ping"].get("jitter", 0.0)),
            packet_loss=float(loss) if loss is not None else None,
            isp=str(record.get("isp", "")),
            server=f"{server.get('name', '?')} ({where}; id {server.get('id', '?')})"
            if where
            else str(server.get("name", "?")),
            url=str(record.get("result", {}).get("url", "")),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"its result lacks {exc}") from None


def _command(config: SpeedtestConfig) -> str:
    args = "--format=json --accept-license --accept-gdpr"
    if config.server_id is not None:
        args += f" --server-id={config.server_id}"
    return (
        f"if ! command -v speedtest >/dev/null 2>&1; then echo {_MISSING}; exit 127; fi; "
        f"speedtest {args}"
    )


def _shortfalls(found: Speedtest, config: SpeedtestConfig) -> list[str]:
    """Say which minimum was missed, and by how much."""
    out = []
    for what, value, limit in (
        ("download", found.download_mbps, config.min_down),
        ("upload", found.upload_mbps, config.min_up),
    ):
        if limit is not None and value < limit:
            out.append(
                f"{what} {value:.1f} Mbps is below the {limit:g} Mbps minimum by "
                f"{limit - value:.1f} Mbps"
            )
    return out


def _details(found: Speedtest, short: list[str]) -> str:
    loss = f"{found.packet_loss:.1f}%" if found.packet_loss is not None else "not measured"
    rows = [
        "| what | value |",
        "|---|---|",
        f"| download | {found.download_mbps:.1f} Mbps |",
        f"| upload | {found.upload_mbps:.1f} Mbps |",
        f"| ping | {found.ping_ms:.1f} ms (jitter {found.jitter_ms:.1f} ms) |",
        f"| packet loss | {loss} |",
        f"| server | {found.server.replace('|', '/')} |",
        f"| ISP | {found.isp.replace('|', '/')} |",
    ]
    if found.url:
        rows.append(f"| result | {found.url} |")
    head = ["**Below minimum:**", *[f"- {s}" for s in short], ""] if short else []
    return "\n".join([*head, *rows])


class SpeedtestPlugin(Plugin):
    """Measure a target's internet speed with Ookla's CLI; check minimum speeds."""

    name = "speedtest"
    description = (
        "Download, upload, ping, jitter and packet loss with Ookla's Speedtest CLI on the "
        "target, with minimum speeds that fail the run and notify."
    )
    config_model = SpeedtestConfig

    def run(self, ctx: PluginContext, config: BaseModel) -> PluginResult:
        """Run the CLI on the target, read its JSON result and compare it with the minimums."""
        assert isinstance(config, SpeedtestConfig)
        result = ctx.runner.run(_command(config), timeout=ctx.timeout)
        if _MISSING in result.stdout:
            return self._failed(
                f"speedtest (Ookla CLI) is not installed on {ctx.runner.name}: see {INSTALL_URL}"
            )
        if result.timed_out or result.exit_code is None:
            return self._failed(
                f"the test on {ctx.runner.name} did not finish: {result.error_text}",
                result.stderr,
            )
        output = f"{result.stdout}\n{result.stderr}"
        try:
            found = parse_output(output)
        except ValueError as exc:
            if "unrecognized arguments" in result.stderr:
                return self._failed(
                    f"the speedtest on {ctx.runner.name} is not Ookla's CLI (the Python "
                    f"speedtest-cli takes other options): install Ookla's from {INSTALL_URL}",
                    result.stderr,
                )
            code = f" (exit code {result.exit_code})" if result.exit_code else ""
            return self._failed(
                f"speedtest failed on {ctx.runner.name}{code}: {exc}", result.stderr
            )
        short = _shortfalls(found, config)
        figures = (
            f"down {found.download_mbps:.1f} Mbps, up {found.upload_mbps:.1f} Mbps, "
            f"ping {found.ping_ms:.1f} ms"
        )
        summary = (
            f"{ctx.runner.name}: {'; '.join(short)}"
            if short
            else f"{ctx.runner.name}: {figures} ({found.server})"
        )
        metrics = [
            Metric(name="download_mbps", value=round(found.download_mbps, 3), unit="Mbps"),
            Metric(name="upload_mbps", value=round(found.upload_mbps, 3), unit="Mbps"),
            Metric(name="ping_ms", value=found.ping_ms, unit="ms"),
            Metric(name="jitter_ms", value=found.jitter_ms, unit="ms"),
        ]
        if found.packet_loss is not None:
            metrics.append(Metric(name="packet_loss", value=found.packet_loss, unit="%"))
        return PluginResult(
            success=not short,
            summary=summary,
            details=_details(found, short),
            metrics=metrics,
            notify=bool(short) or config.notify,
            priority=8 if short else 3,
        )

    @staticmethod
    def _failed(summary: str, stderr: str = "") -> PluginResult:
        tail = stderr.strip()[-2000:]
        return PluginResult(
            success=False,
            summary=f"speedtest: {summary}",
            details=f"```\n{tail}\n```" if tail else "",
            notify=True,
            priority=7,
        )


PLUGIN = SpeedtestPlugin

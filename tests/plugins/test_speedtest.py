"""The ``speedtest`` plugin, with a stand-in Ookla CLI first on PATH.

Ookla's CLI measures the real internet link and needs its servers: a small
executable called ``speedtest`` prints the CLI's recorded real-format JSON and
records the arguments it was given (the seam the plugin sees is the command line).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures.runenv import RunEnv
from standins import bare_path, first_on_path, run_plugin, stand_in

from svrctl.exceptions import BadInputError
from svrctl.plugin import PluginResult, get_plugin, validate_config
from svrctl.plugins.speedtest import parse_output

# `speedtest --format=json --accept-license --accept-gdpr` on a real host (one line).
RESULT = {
    "type": "result",
    "timestamp": "2024-11-25T14:03:11Z",
    "ping": {"jitter": 0.412, "latency": 3.957, "low": 3.601, "high": 4.612},
    "download": {
        "bandwidth": 117502744,
        "bytes": 1167012960,
        "elapsed": 10008,
        "latency": {"iqm": 14.286, "low": 4.021, "high": 231.447, "jitter": 4.116},
    },
    "upload": {
        "bandwidth": 4384625,
        "bytes": 43957904,
        "elapsed": 10104,
        "latency": {"iqm": 48.305, "low": 4.337, "high": 297.914, "jitter": 16.804},
    },
    "packetLoss": 0.5,
    "isp": "Spectrum",
    "interface": {
        "internalIp": "192.168.1.23",
        "name": "eth0",
        "macAddr": "D8:3A:DD:12:34:56",
        "isVpn": False,
        "externalIp": "203.0.113.45",
    },
    "server": {
        "id": 16969,
        "host": "speedtest.austin.rr.com",
        "port": 8080,
        "name": "Spectrum",
        "location": "Austin, TX",
        "country": "United States",
        "ip": "198.51.100.10",
    },
    "result": {
        "id": "6a4f0c1e-2b7d-4c3a-9e51-8f2d7b3c9a10",
        "url": "https://www.speedtest.net/result/c/6a4f0c1e-2b7d-4c3a-9e51-8f2d7b3c9a10",
        "persisted": True,
    },
}
# What the CLI prints (on stderr) when it cannot reach Speedtest's servers; it exits 2.
ERRORS = (
    '{"type":"log","timestamp":"2024-11-25T14:05:02Z","message":"Configuration - '
    'Couldn\'t resolve host name (HostNotFoundException)","level":"error"}\n'
    '{"type":"log","timestamp":"2024-11-25T14:05:02Z","message":"ConfigurationError - '
    'Could not retrieve or read configuration (ConfigurationError)","level":"error"}\n'
)
SERVER = "Spectrum (Austin, TX, United States; id 16969)"


def _stand_in(bindir: Path, script: str) -> Path:
    """Put a ``speedtest`` first on PATH that logs its arguments and then runs ``script``."""
    log = bindir / "calls.log"
    stand_in(bindir, "speedtest", f'echo "$*" >> {log}\n{script}')
    return log


def _prints(bindir: Path, record: dict[str, object]) -> Path:
    (bindir / "result.json").write_text(json.dumps(record, separators=(",", ":")) + "\n")
    return _stand_in(bindir, f"cat {bindir}/result.json\n")


@pytest.fixture
def bindir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory first on PATH for the stand-in CLI."""
    return first_on_path(tmp_path, monkeypatch)


def _run(config: dict[str, object], timeout: float = 60) -> PluginResult:
    return run_plugin("speedtest", config, timeout)


def test_a_result_is_reported_in_mbps(bindir: Path) -> None:
    log = _prints(bindir, RESULT)
    result = _run({})
    assert result.success, result.summary
    assert log.read_text() == "--format=json --accept-license --accept-gdpr\n"
    # bandwidth is bytes/s: 117502744 * 8 / 1e6 = 940.02 Mbps; 4384625 * 8 / 1e6 = 35.08
    assert result.summary == f"here: down 940.0 Mbps, up 35.1 Mbps, ping 4.0 ms ({SERVER})"
    assert {m.name: (m.value, m.unit) for m in result.metrics} == {
        "download_mbps": (940.022, "Mbps"),
        "upload_mbps": (35.077, "Mbps"),
        "ping_ms": (3.957, "ms"),
        "jitter_ms": (0.412, "ms"),
        "packet_loss": (0.5, "%"),
    }
    for row in (
        "| ping | 4.0 ms (jitter 0.4 ms) |",
        "| packet loss | 0.5% |",
        f"| server | {SERVER} |",
        "| ISP | Spectrum |",
        f"| result | {RESULT['result']['url']} |",  # type: ignore[index]
    ):
        assert row in result.details
    assert result.notify and result.priority == 3


def test_the_configured_server_is_passed(bindir: Path) -> None:
    log = _prints(bindir, RESULT)
    assert _run({"server_id": 16969, "notify": False}).notify is False
    assert log.read_text() == "--format=json --accept-license --accept-gdpr --server-id=16969\n"


def test_below_the_minimums_fails_and_notifies_higher(bindir: Path) -> None:
    _prints(bindir, RESULT)
    result = _run({"min_down": 1000, "min_up": 50, "notify": False})
    assert not result.success
    assert result.summary == (
        "here: download 940.0 Mbps is below the 1000 Mbps minimum by 60.0 Mbps; "
        "upload 35.1 Mbps is below the 50 Mbps minimum by 14.9 Mbps"
    )
    assert result.notify and result.priority == 8
    assert result.details.startswith("**Below minimum:**\n- download 940.0 Mbps")
    only_up = _run({"min_down": 900, "min_up": 50})
    assert not only_up.success and only_up.summary.startswith("here: upload 35.1 Mbps is below")


def test_at_or_above_the_minimums_passes(bindir: Path) -> None:
    _prints(bindir, RESULT)
    result = _run({"min_down": 940, "min_up": 35})
    assert result.success and result.priority == 3


def test_without_packet_loss_there_is_no_packet_loss_metric(bindir: Path) -> None:
    _prints(bindir, {k: v for k, v in RESULT.items() if k != "packetLoss"})
    result = _run({})
    assert result.success
    assert "packet_loss" not in {m.name for m in result.metrics}
    assert "| packet loss | not measured |" in result.details


def test_a_missing_cli_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bare_path(tmp_path, monkeypatch)
    result = _run({})
    assert not result.success and result.notify
    assert result.summary == (
        "speedtest: speedtest (Ookla CLI) is not installed on here: "
        "see https://www.speedtest.net/apps/cli"
    )


def test_the_cli_error_lines_are_reported(bindir: Path) -> None:
    (bindir / "errors.txt").write_text(ERRORS)
    _stand_in(bindir, f"cat {bindir}/errors.txt >&2; exit 2\n")
    result = _run({})
    assert not result.success and result.notify
    assert result.summary == (
        "speedtest: speedtest failed on here (exit code 2): Configuration - Couldn't resolve "
        "host name (HostNotFoundException); ConfigurationError - Could not retrieve or read "
        "configuration (ConfigurationError)"
    )
    assert "HostNotFoundException" in result.details


def test_output_that_is_not_json_is_an_error(bindir: Path) -> None:
    _stand_in(bindir, "echo 'Segmentation fault'\n")
    result = _run({})
    assert not result.success
    assert result.summary == (
        "speedtest: speedtest failed on here: no JSON result in its output: 'Segmentation fault'"
    )


def test_the_python_speedtest_cli_is_not_taken_for_ookla(bindir: Path) -> None:
    _stand_in(
        bindir,
        "echo 'usage: speedtest [-h] [--no-download] [--no-upload] [--single] [--bytes]' >&2\n"
        "echo 'speedtest: error: unrecognized arguments: --format=json --accept-license "
        "--accept-gdpr' >&2\nexit 2\n",
    )
    result = _run({})
    assert not result.success
    assert result.summary == (
        "speedtest: the speedtest on here is not Ookla's CLI (the Python speedtest-cli takes "
        "other options): install Ookla's from https://www.speedtest.net/apps/cli"
    )


def test_a_test_past_the_timeout_is_stopped(bindir: Path) -> None:
    _stand_in(bindir, "sleep 30\n")
    result = _run({}, timeout=1)
    assert not result.success
    assert result.summary.startswith("speedtest: the test on here did not finish: ")
    assert "timeout of 1 s" in result.summary


def test_parse_output_takes_the_result_line_among_logs() -> None:
    info = '{"type":"log","timestamp":"2024-11-25T14:03:00Z","message":"x","level":"info"}'
    found = parse_output(f"{info}\n{json.dumps(RESULT)}\n")
    assert found.download_mbps == pytest.approx(940.021952)
    with pytest.raises(ValueError, match="it printed nothing"):
        parse_output("")
    with pytest.raises(ValueError, match="its result lacks 'download'"):
        parse_output(json.dumps({k: v for k, v in RESULT.items() if k != "download"}))


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"min_down": 0}, "min_down"),
        ({"min_up": "fast"}, "min_up"),
        ({"server_id": -3}, "server_id"),
        ({"min_download": 100}, "min_download"),
    ],
)
def test_bad_config_names_the_field(config: dict[str, object], field: str) -> None:
    with pytest.raises(BadInputError) as info:
        validate_config(get_plugin("speedtest"), config)
    assert info.value.field == f"plugin_config.{field}"


def test_config_defaults_have_no_minimums() -> None:
    config = validate_config(get_plugin("speedtest"), None)
    assert config.model_dump() == {
        "min_down": None,
        "min_up": None,
        "server_id": None,
        "notify": True,
    }


def test_a_task_below_its_minimum_fails(run_env: RunEnv, bindir: Path) -> None:
    _prints(bindir, RESULT)
    config = json.dumps({"min_down": 100, "min_up": 100})
    task_id = run_env.add_task("s", "--plugin", "speedtest", "--config", config)
    result = run_env.run(task_id)
    assert not result.success and result.status == "failed"
    assert result.error is not None
    assert "upload 35.1 Mbps is below the 100 Mbps minimum by 64.9 Mbps" in result.error
    [row] = run_env.rows(task_id)
    assert row.status == "failed" and "| download | 940.0 Mbps |" in row.output

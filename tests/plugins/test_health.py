"""The ``health`` plugin: over the real sshd, locally, and on recorded /proc output."""

from __future__ import annotations

import json

import pytest
from fixtures.runenv import RunEnv

from svrctl.exceptions import BadInputError
from svrctl.plugin import get_plugin, validate_config
from svrctl.plugins.health import HealthConfig, parse_snapshot

# Output of the plugin's command on a real Debian host (two /proc/stat samples 1 s apart).
RECORDED = """--svrctl-section:stat1
cpu  10000 0 5000 80000 1000 0 0 0 0 0
--svrctl-section:stat2
cpu  10150 0 5050 80780 1020 0 0 0 0 0
--svrctl-section:loadavg
0.52 0.41 0.30 1/245 12345
--svrctl-section:nproc
4
--svrctl-section:meminfo
MemTotal:        8000000 kB
MemFree:          500000 kB
MemAvailable:    2000000 kB
Cached:          1200000 kB
SwapTotal:       1000000 kB
SwapFree:         750000 kB
--svrctl-section:mounts
overlay / overlay rw,relatime 0 0
proc /proc proc rw 0 0
tmpfs /run tmpfs rw 0 0
/dev/sda1 /boot ext4 rw 0 0
/dev/loop0 /snap/core/1 squashfs ro 0 0
/dev/sdb1 /srv/my\\040data xfs rw 0 0
--svrctl-section:df
Filesystem     1024-blocks      Used Available Capacity Mounted on
overlay           10000000   4000000   6000000      40% /
tmpfs               100000         0    100000       0% /run
/dev/sda1           500000    450000     50000      90% /boot
/dev/loop0           60000     60000         0     100% /snap/core/1
/dev/sdb1          2000000    500000   1500000      25% /srv/my data
--svrctl-section:uptime
93784.51 180000.00
"""


def test_parse_recorded_output() -> None:
    snap = parse_snapshot(RECORDED)
    # busy +200 (user 150, system 50), idle+iowait +800: 200 of 1000 jiffies
    assert snap.cpu_percent == pytest.approx(20.0)
    assert snap.load == (0.52, 0.41, 0.30)
    assert snap.cores == 4
    assert snap.memory_total == 8_000_000 * 1024
    assert snap.memory_percent == pytest.approx(75.0)
    assert snap.swap_percent == pytest.approx(25.0)
    assert snap.uptime_seconds == pytest.approx(93784.51)
    mounts = {fs.mount: fs for fs in snap.filesystems}
    assert sorted(mounts) == ["/", "/boot", "/srv/my data"]  # no proc, tmpfs or squashfs
    assert mounts["/boot"].used_percent == pytest.approx(90.0)
    assert mounts["/"].total_bytes == 10_000_000 * 1024


def test_cpu_usage_from_two_samples() -> None:
    text = RECORDED.replace(
        "cpu  10150 0 5050 80780 1020 0 0 0 0 0", "cpu  10300 0 5100 80800 1200 0 0 0 0 0"
    )
    # busy +400 (user 300, system 100); idle+iowait +1000: 400 of 1400 jiffies
    assert parse_snapshot(text).cpu_percent == pytest.approx(100 * 400 / 1400)


def test_thresholds_name_what_crossed_and_by_how_much() -> None:
    from svrctl.plugins.health import _crossings

    snap = parse_snapshot(RECORDED)
    config = HealthConfig(memory_percent=70, disk_percent=85, ignore_mounts=["/srv/*"])
    assert _crossings(snap, config) == [
        "memory at 75.0% is over the 70% threshold by 5.0 points",
        "disk /boot at 90.0% is over the 85% threshold by 5.0 points",
    ]
    assert _crossings(snap, HealthConfig(disk_percent=85, ignore_mounts=["/boot"])) == []
    assert _crossings(snap, HealthConfig(memory_percent=80, disk_percent=95)) == []


def test_output_that_is_not_linux_is_refused() -> None:
    with pytest.raises(ValueError, match="lacks"):
        parse_snapshot("Darwin\n")


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"cpu_percent": 150}, "cpu_percent"),
        ({"memory_percent": 0}, "memory_percent"),
        ({"disk_percent": "full"}, "disk_percent"),
        ({"sample_seconds": 60}, "sample_seconds"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_config_names_the_field(config: dict[str, object], field: str) -> None:
    with pytest.raises(BadInputError) as info:
        validate_config(get_plugin("health"), config)
    assert info.value.field == f"plugin_config.{field}"
    assert field in info.value.message


def test_bad_config_is_refused_at_task_add(run_env: RunEnv) -> None:
    r = run_env.svrctl("task", "add", "h", "--plugin", "health", "--config", '{"cpu_percent": 101}')
    assert r.exit_code == 2
    assert "cpu_percent" in r.output
    assert json.loads(run_env.ok("task", "list", "--json")) == []


def test_health_over_ssh(run_env: RunEnv) -> None:
    run_env.add_server("box")
    config = json.dumps({"sample_seconds": 0.2})
    task_id = run_env.add_task("h", "--plugin", "health", "--server", "box", "--config", config)
    result = run_env.run(task_id)
    assert result.success, result.error
    assert result.output.startswith("box: CPU ")
    [row] = run_env.rows(task_id)
    assert row.status == "success" and row.server_name == "box"
    assert "| memory |" in row.output and "| disk / |" in row.output


def test_thresholds_fail_the_run_over_ssh(run_env: RunEnv) -> None:
    run_env.add_server("box")
    config = json.dumps({"sample_seconds": 0.2, "memory_percent": 0.001, "disk_percent": 0.001})
    task_id = run_env.add_task("h", "--plugin", "health", "--server", "box", "--config", config)
    result = run_env.run(task_id)
    assert not result.success
    assert result.status == "failed"
    assert result.error is not None
    assert "memory at " in result.error and "over the 0.001% threshold" in result.error
    assert "disk / at " in result.error


def test_health_locally(run_env: RunEnv) -> None:
    task_id = run_env.add_task("h", "--plugin", "health", "--config", '{"sample_seconds": 0.2}')
    result = run_env.run(task_id)
    assert result.success, result.error
    assert "CPU" in result.output and "memory" in result.output

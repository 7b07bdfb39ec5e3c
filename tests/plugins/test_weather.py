"""The ``weather`` plugin against a real HTTP server on loopback shaped like OpenWeatherMap.

OpenWeatherMap itself cannot be reached from the tests: a small ``http.server``
on 127.0.0.1 answers its four endpoints with recorded real-format bodies and
records each request it gets. The plugin reaches it through ``base_url``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fixtures.runenv import RunEnv

from svrctl.exceptions import BadInputError, SecretError
from svrctl.local import LocalRunner
from svrctl.plugin import PluginContext, PluginResult, get_plugin, validate_config

KEY = "3f2a9c0e5b7d41e8a6c2f09b1d4e7a55"  # what an OpenWeatherMap key looks like
SECRET = "owm-key"

# Recorded answers of the real API (values trimmed to one place, shapes unchanged).
DIRECT = [
    {
        "name": "Austin",
        "local_names": {"en": "Austin", "es": "Austin", "ru": "Остин"},
        "lat": 30.2711286,
        "lon": -97.7436995,
        "country": "US",
        "state": "Texas",
    }
]
ZIP = {"zip": "78701", "name": "Austin", "lat": 30.2713, "lon": -97.7426, "country": "US"}
CURRENT = {
    "coord": {"lon": -97.7437, "lat": 30.2711},
    "weather": [{"id": 800, "main": "Clear", "description": "clear sky", "icon": "01d"}],
    "base": "stations",
    "main": {
        "temp": 21.27,
        "feels_like": 20.61,
        "temp_min": 19.94,
        "temp_max": 22.6,
        "pressure": 1018,
        "humidity": 40,
        "sea_level": 1018,
        "grnd_level": 993,
    },
    "visibility": 10000,
    "wind": {"speed": 3.6, "deg": 170, "gust": 6.2},
    "clouds": {"all": 0},
    "dt": 1732550400,
    "sys": {"type": 2, "id": 2008738, "country": "US", "sunrise": 1732539542, "sunset": 1732576987},
    "timezone": -21600,
    "id": 4671654,
    "name": "Austin",
    "cod": 200,
}


def _daily(i: int) -> dict[str, Any]:
    dt = 1732557600 + i * 86400  # 12:00 local time (UTC-6) from Mon 25 Nov 2024
    rain = i == 1
    day: dict[str, Any] = {
        "dt": dt,
        "sunrise": dt - 18000,
        "sunset": dt + 18000,
        "moonrise": dt - 30000,
        "moonset": dt + 10000,
        "moon_phase": 0.8,
        "summary": "Expect a day of partly cloudy with rain" if rain else "There will be clear sky",
        "temp": {
            "day": 21.0 + i,
            "min": 12.3 + i,
            "max": 23.4 + i,
            "night": 15.0,
            "eve": 19.8,
            "morn": 12.9,
        },
        "feels_like": {"day": 20.5, "night": 14.6, "eve": 19.5, "morn": 12.1},
        "pressure": 1018,
        "humidity": 38,
        "dew_point": 6.9,
        "wind_speed": 4.1,
        "wind_deg": 176,
        "wind_gust": 8.3,
        "weather": [
            {"id": 500, "main": "Rain", "description": "light rain", "icon": "10d"}
            if rain
            else {"id": 800, "main": "Clear", "description": "clear sky", "icon": "01d"}
        ],
        "clouds": 75 if rain else 0,
        "pop": 0.47 if rain else 0,
        "uvi": 4.7,
    }
    if rain:
        day["rain"] = 1.2
    return day


ONECALL = {
    "lat": 30.2711,
    "lon": -97.7437,
    "timezone": "America/Chicago",
    "timezone_offset": -21600,
    "daily": [_daily(i) for i in range(8)],
}
INVALID_KEY = {
    "cod": 401,
    "message": "Invalid API key. Please see https://openweathermap.org/faq#error401 for more info.",
}
NO_ONECALL = {
    "cod": 401,
    "message": "Please note that using One Call 3.0 requires a separate subscription to the "
    "One Call by Call plan. Learn more here https://openweathermap.org/price. If you have a "
    "valid subscription to the One Call by Call plan, but still receive this error, then "
    "please see https://openweathermap.org/faq#error401 for more info.",
}
ROUTES: dict[str, Any] = {
    "/geo/1.0/direct": DIRECT,
    "/geo/1.0/zip": ZIP,
    "/data/2.5/weather": CURRENT,
    "/data/3.0/onecall": ONECALL,
}


@dataclass
class FakeOwm:
    """The test server: what it answers, and the requests (path, query) it received."""

    url: str
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    # path -> (status, body, content type); absent paths answer from ROUTES
    answers: dict[str, tuple[int, Any]] = field(default_factory=dict)
    delay: float = 0.0

    def query(self, path: str) -> dict[str, str]:
        """Return the query of the one request made to ``path``."""
        found = [q for p, q in self.requests if p == path]
        assert len(found) == 1, self.requests
        return found[0]

    @property
    def paths(self) -> list[str]:
        return [p for p, _ in self.requests]


def _handler(owm: FakeOwm) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            split = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
            owm.requests.append((split.path, query))
            if owm.delay:
                time.sleep(owm.delay)
            status, body = owm.answers.get(split.path, (200, ROUTES.get(split.path)))
            if split.path not in ROUTES:
                status, body = 404, {"cod": "404", "message": "Internal error"}
            elif query.get("appid") != KEY:
                status, body = 401, INVALID_KEY
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            content_type = "text/plain" if isinstance(body, bytes) else "application/json"
            self.send_response(status)
            self.send_header("Content-Type", f"{content_type}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def owm() -> Iterator[FakeOwm]:
    """An OpenWeatherMap stand-in served on 127.0.0.1 by a thread."""
    fake = FakeOwm(url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _secrets(values: dict[str, str]) -> Callable[[str], str]:
    def read(name: str) -> str:
        if name not in values:
            raise SecretError(f"there is no Prefect Secret block named {name!r}")
        return values[name]

    return read


def _run(
    owm: FakeOwm,
    config: dict[str, object],
    *,
    key: str = KEY,
    timeout: float = 20,
) -> PluginResult:
    plugin = get_plugin("weather")
    full = {"api_key_secret": SECRET, "base_url": owm.url, **config}
    ctx = PluginContext(
        runner=LocalRunner(output_limit=100_000, name="here"),
        timeout=timeout,
        action="check",
        secrets=_secrets({SECRET: key}),
    )
    try:
        return plugin().run(ctx, validate_config(plugin, full))
    finally:
        ctx.close()


def _no_key(result: PluginResult) -> None:
    for text in (result.summary, result.details, result.model_dump_json()):
        assert KEY not in text


# ------------------------------------------------------------------ the happy paths


def test_location_geocodes_then_fetches_current_and_forecast(owm: FakeOwm) -> None:
    result = _run(owm, {"location": "Austin,TX,US"})
    assert result.success, result.summary
    assert owm.paths == ["/geo/1.0/direct", "/data/2.5/weather", "/data/3.0/onecall"]
    assert owm.query("/geo/1.0/direct") == {"q": "Austin,TX,US", "limit": "1", "appid": KEY}
    coords = {"lat": "30.2711286", "lon": "-97.7436995"}
    assert owm.query("/data/2.5/weather") == {**coords, "units": "metric", "appid": KEY}
    assert owm.query("/data/3.0/onecall") == {
        **coords,
        "exclude": "current,minutely,hourly,alerts",
        "units": "metric",
        "appid": KEY,
    }
    assert result.summary == "Austin, Texas, US: 21°C, clear sky, humidity 40%"
    assert "| temperature | 21.3 °C (feels like 20.6 °C) |" in result.details
    assert "| wind | 3.6 m/s |" in result.details
    # the forecast: 7 days by default, dates in the place's time zone
    forecast = [line for line in result.details.splitlines() if line.startswith("| ")][-7:]
    assert forecast[0] == "| Mon 25 Nov | 12 °C | 23 °C | clear sky | 0% |"
    assert forecast[1] == "| Tue 26 Nov | 13 °C | 24 °C | light rain | 47% |"
    assert forecast[-1].startswith("| Sun 01 Dec |")
    assert "Mon 02 Dec" not in result.details
    assert [(m.name, m.value, m.unit) for m in result.metrics] == [
        ("temperature", 21.27, "°C"),
        ("feels_like", 20.61, "°C"),
        ("humidity", 40, "%"),
        ("wind_speed", 3.6, "m/s"),
    ]
    assert all(m.labels == {"location": "Austin, Texas, US"} for m in result.metrics)
    assert result.notify and result.priority == 2
    _no_key(result)


def test_zip_uses_zip_geocoding_and_the_configured_units(owm: FakeOwm) -> None:
    result = _run(owm, {"zip": " 78701,US ", "units": "imperial", "days": 3, "notify": False})
    assert result.success, result.summary
    assert owm.paths == ["/geo/1.0/zip", "/data/2.5/weather", "/data/3.0/onecall"]
    assert owm.query("/geo/1.0/zip") == {"zip": "78701,US", "appid": KEY}
    current = owm.query("/data/2.5/weather")
    assert current == {"lat": "30.2713", "lon": "-97.7426", "units": "imperial", "appid": KEY}
    assert owm.query("/data/3.0/onecall")["units"] == "imperial"
    assert result.summary == "Austin, US: 21°F, clear sky, humidity 40%"
    assert {m.name: m.unit for m in result.metrics}["wind_speed"] == "mph"
    assert result.details.count("°F |") == 3 * 2  # low and high of 3 days
    assert not result.notify


def test_days_zero_fetches_no_forecast_and_empty_zip_is_unset(owm: FakeOwm) -> None:
    result = _run(owm, {"location": "Austin,TX,US", "zip": "", "days": 0})
    assert result.success, result.summary
    assert owm.paths == ["/geo/1.0/direct", "/data/2.5/weather"]
    assert "| day |" not in result.details


def test_a_key_without_one_call_still_reports_current_conditions(owm: FakeOwm) -> None:
    owm.answers["/data/3.0/onecall"] = (401, NO_ONECALL)
    result = _run(owm, {"location": "Austin,TX,US"})
    assert result.success
    assert result.summary.startswith(
        "Austin, Texas, US: 21°C, clear sky, humidity 40% (no forecast"
    )
    assert "One Call by Call subscription" in result.summary and "days: 0" in result.summary
    assert "| day |" not in result.details


# ------------------------------------------------------------------ errors


def test_a_wrong_key_says_so(owm: FakeOwm) -> None:
    result = _run(owm, {"location": "Austin,TX,US"}, key="0" * 32)
    assert not result.success and result.notify
    assert result.summary.startswith(
        f"weather: OpenWeatherMap refused the API key from the Secret block {SECRET!r} "
        "(401: Invalid API key."
    )
    assert f"svrctl secret set {SECRET}" in result.summary
    assert owm.paths == ["/geo/1.0/direct"]
    assert "0" * 32 not in result.summary


def test_an_unknown_place_says_so(owm: FakeOwm) -> None:
    owm.answers["/geo/1.0/direct"] = (200, [])
    result = _run(owm, {"location": "Nowhere,ZZ"})
    assert not result.success
    assert result.summary.startswith(
        "weather: OpenWeatherMap knows no place called 'Nowhere,ZZ': check the config's location"
    )
    assert owm.paths == ["/geo/1.0/direct"]


def test_an_unknown_zip_says_so(owm: FakeOwm) -> None:
    owm.answers["/geo/1.0/zip"] = (404, {"cod": "404", "message": "not found"})
    result = _run(owm, {"zip": "00000,US"})
    assert not result.success
    assert result.summary.startswith(
        "weather: OpenWeatherMap knows no place with zip '00000,US': check the config's zip"
    )


def test_a_slow_api_times_out(owm: FakeOwm) -> None:
    owm.delay = 3.0
    started = time.monotonic()
    result = _run(owm, {"location": "Austin,TX,US"}, timeout=0.3)
    assert time.monotonic() - started < 2.5
    assert not result.success
    assert result.summary == (
        "weather: OpenWeatherMap did not answer the geocoding request within 0.3 s: "
        "try again later, or give the task a longer timeout"
    )


def test_an_unreachable_api_names_the_url_not_the_key(owm: FakeOwm) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    result = _run(owm, {"location": "Austin,TX,US", "base_url": closed})
    assert not result.success
    assert result.summary.startswith(f"weather: cannot reach {closed} for the geocoding request")
    assert "check base_url" in result.summary
    _no_key(result)


def test_a_missing_secret_block_says_what_to_do(owm: FakeOwm) -> None:
    result = _run(owm, {"location": "Austin,TX,US", "api_key_secret": "no-such-block"})
    assert not result.success
    assert result.summary == (
        "weather: cannot read the API key: there is no Prefect Secret block named 'no-such-block'"
    )
    assert owm.requests == []


def test_an_error_page_that_echoes_the_url_never_shows_the_key(owm: FakeOwm) -> None:
    # A proxy in front of the API answers 502 and prints the request line it got.
    echo = f"Bad gateway for GET /data/2.5/weather?lat=30.27&appid={KEY}".encode()
    owm.answers["/data/2.5/weather"] = (502, echo)
    result = _run(owm, {"location": "Austin,TX,US"})
    assert not result.success
    assert result.summary.startswith("weather: OpenWeatherMap answered 502 to the current weather")
    assert "appid=***" in result.summary
    _no_key(result)


def test_httpx_request_log_lines_never_show_the_key(
    owm: FakeOwm, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="httpx")
    assert _run(owm, {"location": "Austin,TX,US"}).success
    lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert len(lines) == 3 and all("appid=***" in line for line in lines)
    assert KEY not in caplog.text


# ------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("config", "field", "says"),
    [
        ({"api_key_secret": "k"}, "location", "set location"),
        ({"api_key_secret": "k", "zip": "  "}, "location", "set location"),
        ({"api_key_secret": "k", "location": "Austin", "zip": "78701,US"}, "zip", "not both"),
        ({"location": "Austin"}, "api_key_secret", "required"),
        ({"location": "Austin", "api_key_secret": "My Key"}, "api_key_secret", "block name"),
        ({"location": "Austin", "api_key_secret": "k", "units": "kelvin"}, "units", "metric"),
        ({"location": "Austin", "api_key_secret": "k", "days": 9}, "days", "8"),
        ({"location": "Austin", "api_key_secret": "k", "base_url": "api.x"}, "base_url", "URL"),
        ({"location": "Austin", "api_key_secret": "k", "api_key": "x"}, "api_key", "Extra"),
    ],
)
def test_bad_config_names_the_field(config: dict[str, object], field: str, says: str) -> None:
    with pytest.raises(BadInputError) as info:
        validate_config(get_plugin("weather"), config)
    assert info.value.field == f"plugin_config.{field}"
    assert says in info.value.message


def test_config_defaults() -> None:
    config = validate_config(get_plugin("weather"), {"zip": "78701,US", "api_key_secret": "k"})
    assert config.model_dump() == {
        "location": None,
        "zip": "78701,US",
        "api_key_secret": "k",
        "units": "metric",
        "days": 7,
        "base_url": "https://api.openweathermap.org",
        "notify": True,
    }


# ------------------------------------------------------------------ a real Secret block


def test_a_task_reads_its_key_from_a_real_prefect_secret_block(
    prefect_api: str, run_env: RunEnv, owm: FakeOwm
) -> None:
    from svrctl.secrets import save_prefect_secret

    block = f"owm-{uuid.uuid4().hex[:8]}"
    config = json.dumps({"location": "Austin,TX,US", "api_key_secret": block, "base_url": owm.url})
    task_id = run_env.add_task("w", "--plugin", "weather", "--config", config)
    missing = run_env.run(task_id)
    assert not missing.success
    assert missing.error is not None
    assert f"there is no Prefect Secret block named {block!r}" in missing.error
    assert owm.requests == []

    save_prefect_secret(block, KEY)
    result = run_env.run(task_id)
    assert result.success, result.error
    assert result.output.startswith("Austin, Texas, US: 21°C, clear sky, humidity 40%")
    assert owm.query("/geo/1.0/direct")["appid"] == KEY
    assert KEY not in result.output
    assert all(KEY not in (row.output or "") + (row.error or "") for row in run_env.rows(task_id))

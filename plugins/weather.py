"""The ``weather`` plugin: current conditions and a daily forecast from OpenWeatherMap.

The place is geocoded first (``/geo/1.0/direct`` for a ``location``, ``/geo/1.0/zip``
for a ``zip``), then the current conditions come from ``/data/2.5/weather`` and the
daily forecast from One Call 3.0 (``/data/3.0/onecall``, which needs OpenWeatherMap's
separate "One Call by Call" subscription; ``days: 0`` skips it). The API key is read
from a Prefect Secret block named in the config and never appears in what the run
reports: OpenWeatherMap takes it as the ``appid`` query parameter, so every message
that could hold a URL is redacted, and so is httpx's own request log line.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from svrctl.exceptions import SecretError
from svrctl.plugin import Metric, Plugin, PluginContext, PluginResult
from svrctl.specs import check_block_name

__all__ = ["WeatherConfig", "WeatherPlugin", "redact"]

DEFAULT_BASE_URL = "https://api.openweathermap.org"
# (temperature, wind speed) units of each OpenWeatherMap unit system
UNIT_SIGNS = {"standard": ("K", "m/s"), "metric": ("°C", "m/s"), "imperial": ("°F", "mph")}
_APPID = re.compile(r"(appid=)[^&\s'\"]+", re.IGNORECASE)


def redact(text: str, key: str | None = None) -> str:
    """Return ``text`` with the API key and any ``appid=`` query value masked."""
    if key:
        text = text.replace(key, "***")
    return _APPID.sub(r"\1***", text)


class _RedactAppid(logging.Filter):
    """Mask ``appid=`` in httpx's request log lines (``HTTP Request: GET <url> ...``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "appid=" in message.lower():
            record.msg, record.args = redact(message), None
        return True


def _install_log_filter() -> None:
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactAppid) for f in logger.filters):
        logger.addFilter(_RedactAppid())


_install_log_filter()


class WeatherConfig(BaseModel):
    """Settings of the weather plugin: the place, the key's Secret block, units, forecast days."""

    model_config = ConfigDict(extra="forbid")

    location: str | None = Field(
        default=None,
        description='The place as "City,ST,CC" (e.g. "Austin,TX,US"; state and country '
        "optional), geocoded by OpenWeatherMap. Set this or zip.",
    )
    zip: str | None = Field(
        default=None,
        description='The place as a postal code "ZIP,CC" (e.g. "78701,US"; the country '
        "defaults to US). An empty value counts as unset. Set this or location.",
    )
    api_key_secret: str = Field(
        description="Name of the Prefect Secret block that holds the OpenWeatherMap API key "
        "(store it with `svrctl secret set NAME`)."
    )
    units: Literal["standard", "metric", "imperial"] = Field(
        default="metric",
        description="metric (°C, m/s), imperial (°F, mph) or standard (K, m/s).",
    )
    days: int = Field(
        default=7,
        ge=0,
        le=8,
        description="Days of daily forecast (One Call 3.0 gives up to 8, today first); "
        "0 fetches no forecast.",
    )
    base_url: str = Field(
        default=DEFAULT_BASE_URL, description="Root URL of the OpenWeatherMap API."
    )
    notify: bool = Field(
        default=True, description="Ask to notify (at low priority) with every report."
    )

    @field_validator("location", "zip")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return (value or "").strip() or None

    @field_validator("api_key_secret")
    @classmethod
    def _block_name(cls, value: str) -> str:
        if not check_block_name(value, "api_key_secret"):
            raise ValueError("name the Prefect Secret block that holds the API key")
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")

    @model_validator(mode="wrap")
    @classmethod
    def _one_place(cls, data: Any, handler: Any) -> Any:
        config = handler(data)
        if isinstance(config, WeatherConfig):
            if config.location and config.zip:
                _refuse("zip", "set location or zip, not both", data)
            if not config.location and not config.zip:
                _refuse("location", 'set location ("City,ST,CC") or zip ("ZIP,CC")', data)
        return config


def _refuse(field: str, message: str, data: Any) -> None:
    """Raise a validation error located at ``field`` (so the error names it)."""
    error = PydanticCustomError("place", message)
    raise ValidationError.from_exception_data(
        "WeatherConfig", [InitErrorDetails(type=error, loc=(field,), input=data)]
    )


class _Failed(Exception):
    """A request failed; ``summary`` says what, why and what to do (already redacted)."""

    def __init__(self, summary: str, status: int | None = None) -> None:
        super().__init__(summary)
        self.summary = summary
        self.status = status


class _Api:
    """The few OpenWeatherMap calls the plugin makes, with errors turned into _Failed."""

    def __init__(self, ctx: PluginContext, config: WeatherConfig, key: str) -> None:
        self.ctx = ctx
        self.config = config
        self.key = key

    def get(self, path: str, params: dict[str, str], what: str) -> Any:
        http = self.ctx.http
        try:
            response = http.get(
                f"{self.config.base_url}{path}", params={**params, "appid": self.key}
            )
        except httpx.TimeoutException:
            raise _Failed(
                f"OpenWeatherMap did not answer the {what} request within "
                f"{http.timeout.read or self.ctx.timeout:g} s: try again later, or give the "
                "task a longer timeout"
            ) from None
        except httpx.HTTPError as exc:
            reason = redact(f"{exc.__class__.__name__}: {exc}", self.key)
            raise _Failed(
                f"cannot reach {self.config.base_url} for the {what} request ({reason}): "
                "check base_url and this host's network"
            ) from None
        if response.status_code == 200:
            try:
                return response.json()
            except ValueError:
                raise _Failed(
                    f"OpenWeatherMap's answer to the {what} request is not JSON: check base_url"
                ) from None
        message = self._message(response)
        status = response.status_code
        if status == 401:
            raise _Failed(
                f"OpenWeatherMap refused the API key from the Secret block "
                f"{self.config.api_key_secret!r} (401: {message}): store a valid key with "
                f"`svrctl secret set {self.config.api_key_secret}` (a new key can take a "
                "couple of hours to become active)",
                status,
            )
        if status == 429:
            raise _Failed(
                f"OpenWeatherMap's call limit for this key is used up (429: {message}): "
                "run the task less often or raise the key's plan",
                status,
            )
        raise _Failed(f"OpenWeatherMap answered {status} to the {what} request: {message}", status)

    def _message(self, response: httpx.Response) -> str:
        try:
            body = response.json()
            text = str(body.get("message", body)) if isinstance(body, dict) else str(body)
        except ValueError:
            text = response.text or response.reason_phrase
        return redact(text.strip(), self.key)[:300]


def _geocode(api: _Api, config: WeatherConfig) -> dict[str, Any]:
    """Return {name, lat, lon, country[, state]} for the configured place."""
    if config.zip:
        try:
            place = api.get("/geo/1.0/zip", {"zip": config.zip}, "zip geocoding")
        except _Failed as exc:
            if exc.status == 404:
                raise _Failed(
                    f"OpenWeatherMap knows no place with zip {config.zip!r}: check the "
                    'config\'s zip (write it as "ZIP,CC", e.g. "78701,US")'
                ) from None
            raise
        if not isinstance(place, dict) or "lat" not in place or "lon" not in place:
            raise _Failed(f"OpenWeatherMap's zip geocoding answer is unexpected: {place!r:.200}")
        zipped: dict[str, Any] = place
        return zipped
    assert config.location is not None
    found = api.get("/geo/1.0/direct", {"q": config.location, "limit": "1"}, "geocoding")
    if not isinstance(found, list):
        raise _Failed(f"OpenWeatherMap's geocoding answer is unexpected: {found!r:.200}")
    if not found:
        raise _Failed(
            f"OpenWeatherMap knows no place called {config.location!r}: check the config's "
            'location (write it as "City,ST,CC", e.g. "Austin,TX,US") or use zip'
        )
    first = found[0]
    if not isinstance(first, dict) or "lat" not in first or "lon" not in first:
        raise _Failed(f"OpenWeatherMap's geocoding answer is unexpected: {found!r:.200}")
    direct: dict[str, Any] = first
    return direct


def _place_name(place: dict[str, Any]) -> str:
    parts = [place.get("name"), place.get("state"), place.get("country")]
    return ", ".join(str(p) for p in parts if p)


def _day(timestamp: int, offset: int) -> str:
    return datetime.fromtimestamp(timestamp + offset, UTC).strftime("%a %d %b")


def _cell(text: object) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


class WeatherPlugin(Plugin):
    """Report the weather at a place: current conditions and a daily forecast."""

    name = "weather"
    description = (
        "Current conditions and a daily forecast from OpenWeatherMap for a place "
        "(City,ST,CC or ZIP,CC); the API key comes from a Prefect Secret block."
    )
    config_model = WeatherConfig

    def run(self, ctx: PluginContext, config: BaseModel) -> PluginResult:
        """Read the key, geocode the place, fetch the weather and report it."""
        assert isinstance(config, WeatherConfig)
        key = ""
        try:
            key = ctx.secret(config.api_key_secret).strip()
            if not key:
                raise _Failed(
                    f"the Prefect Secret block {config.api_key_secret!r} is empty: store the "
                    f"OpenWeatherMap API key with `svrctl secret set {config.api_key_secret}`"
                )
            result = self._report(ctx, config, _Api(ctx, config, key))
        except SecretError as exc:
            result = self._failed(f"cannot read the API key: {exc.message}")
        except _Failed as exc:
            result = self._failed(exc.summary)
        return result.model_copy(
            update={"summary": redact(result.summary, key), "details": redact(result.details, key)}
        )

    @staticmethod
    def _failed(summary: str) -> PluginResult:
        return PluginResult(success=False, summary=f"weather: {summary}", notify=True, priority=6)

    def _report(self, ctx: PluginContext, config: WeatherConfig, api: _Api) -> PluginResult:
        place = _geocode(api, config)
        where = _place_name(place)
        lat, lon = str(place["lat"]), str(place["lon"])
        now = api.get(
            "/data/2.5/weather",
            {"lat": lat, "lon": lon, "units": config.units},
            "current weather",
        )
        degree, speed = UNIT_SIGNS[config.units]
        try:
            main, wind = now["main"], now.get("wind", {})
            sky = (now.get("weather") or [{}])[0].get("description", "unknown")
            temp, feels, humidity = float(main["temp"]), float(main["feels_like"]), main["humidity"]
            wind_speed = float(wind.get("speed", 0.0))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise _Failed(
                f"OpenWeatherMap's current weather answer is unexpected: {now!r:.200}"
            ) from None
        note = ""
        daily: list[dict[str, Any]] = []
        offset = 0
        if config.days:
            try:
                forecast = api.get(
                    "/data/3.0/onecall",
                    {
                        "lat": lat,
                        "lon": lon,
                        "exclude": "current,minutely,hourly,alerts",
                        "units": config.units,
                    },
                    "forecast",
                )
                daily = list(forecast.get("daily") or [])[: config.days]
                offset = int(forecast.get("timezone_offset", 0))
            except _Failed as exc:
                if exc.status != 401:
                    raise
                # The key works (current weather answered) but has no One Call 3.0 plan.
                note = (
                    "no forecast: OpenWeatherMap refused the One Call 3.0 request (401), which "
                    "needs the separate One Call by Call subscription; subscribe, or set "
                    "days: 0 to skip the forecast"
                )
            except (AttributeError, TypeError, ValueError):
                raise _Failed("OpenWeatherMap's forecast answer is unexpected") from None
        summary = f"{where}: {temp:.0f}{degree}, {sky}, humidity {humidity}%"
        if note:
            summary += f" ({note})"
        rows = [
            f"**{_cell(where)}** ({float(lat):.2f}, {float(lon):.2f})",
            "",
            "| now | |",
            "|---|---|",
            f"| conditions | {_cell(sky)} |",
            f"| temperature | {temp:.1f} {degree} (feels like {feels:.1f} {degree}) |",
            f"| humidity | {humidity}% |",
            f"| wind | {wind_speed:.1f} {speed} |",
        ]
        if "pressure" in main:
            rows.append(f"| pressure | {main['pressure']} hPa |")
        if note:
            rows += ["", f"_{note}_"]
        if daily:
            rows += [
                "",
                "| day | low | high | conditions | chance of rain |",
                "|---|---|---|---|---|",
            ]
            for day in daily:
                try:
                    rows.append(
                        f"| {_day(int(day['dt']), offset)} "
                        f"| {float(day['temp']['min']):.0f} {degree} "
                        f"| {float(day['temp']['max']):.0f} {degree} "
                        f"| {_cell((day.get('weather') or [{}])[0].get('description', ''))} "
                        f"| {float(day.get('pop', 0)) * 100:.0f}% |"
                    )
                except (KeyError, TypeError, ValueError, AttributeError):
                    raise _Failed(
                        f"OpenWeatherMap's forecast answer is unexpected: {day!r:.200}"
                    ) from None
        labels = {"location": where}
        ctx.log.info("weather: %s", summary)
        return PluginResult(
            success=True,
            summary=summary,
            details="\n".join(rows),
            metrics=[
                Metric(name="temperature", value=temp, unit=degree, labels=labels),
                Metric(name="feels_like", value=feels, unit=degree, labels=labels),
                Metric(name="humidity", value=float(humidity), unit="%", labels=labels),
                Metric(name="wind_speed", value=wind_speed, unit=speed, labels=labels),
            ],
            notify=config.notify,
            priority=2,
        )


PLUGIN = WeatherPlugin

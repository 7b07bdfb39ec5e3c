"""The plugin interface: what a plugin declares, what it gets, and what it returns.

Built-in plugins live in ``svrctl.plugins``; third-party ones register under the
entry-point group ``svrctl.plugins``. A plugin never opens SSH connections
itself: it runs commands through ``ctx.runner``.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from svrctl.commands import CommandRunner
from svrctl.exceptions import BadInputError, NotFoundError

if TYPE_CHECKING:
    import httpx

__all__ = [
    "ENTRY_POINT_GROUP",
    "SECTION_MARK",
    "Metric",
    "Plugin",
    "PluginContext",
    "PluginResult",
    "action_of",
    "builtin_modules",
    "get_plugin",
    "plugin_names",
    "plugin_source",
    "section_script",
    "split_sections",
    "validate_config",
]

ENTRY_POINT_GROUP = "svrctl.plugins"


class Metric(BaseModel):
    """One measured figure."""

    name: str
    value: float
    unit: str = ""
    labels: dict[str, str] = Field(default_factory=dict)


class PluginResult(BaseModel):
    """What a plugin run found."""

    success: bool
    summary: str
    details: str = ""
    metrics: list[Metric] = Field(default_factory=list)
    notify: bool = False
    priority: int = Field(default=5, ge=1, le=10)


def _read_secret(name: str) -> str:
    from svrctl.secrets import prefect_secret

    return prefect_secret(name)


@dataclass
class PluginContext:
    """What a plugin run gets: a command runner for its target, HTTP, secrets and a logger.

    ``runner`` runs commands on the task's target (its server over SSH, or the local
    host): plugins never open SSH connections themselves. ``http`` is an httpx client
    bounded by the run's timeout; ``secret(name)`` reads a Prefect Secret block.
    """

    runner: CommandRunner
    timeout: float
    action: str
    log: logging.Logger | logging.LoggerAdapter[Any] = field(
        default_factory=lambda: logging.getLogger("svrctl.plugin")
    )
    secrets: Callable[[str], str] = _read_secret
    _http: httpx.Client | None = field(default=None, init=False, repr=False)

    @property
    def http(self) -> httpx.Client:
        """An HTTP client for this run (created on first use, closed with the context)."""
        if self._http is None:
            import httpx

            self._http = httpx.Client(
                timeout=httpx.Timeout(min(self.timeout, 30.0)),
                follow_redirects=True,
                headers={"User-Agent": "svrctl"},
            )
        return self._http

    def secret(self, name: str) -> str:
        """Return the value of the Prefect Secret block ``name`` (SecretError if missing)."""
        return self.secrets(name)

    def close(self) -> None:
        """Release what the run opened (the HTTP client)."""
        if self._http is not None:
            self._http.close()
            self._http = None


class Plugin(ABC):
    """A plugin: a name, a config model, its actions, and ``run``."""

    name: ClassVar[str]
    description: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]
    actions: ClassVar[tuple[str, ...]] = ("check",)

    @abstractmethod
    def run(self, ctx: PluginContext, config: BaseModel) -> PluginResult:
        """Do the plugin's work for one target and report it."""


class NoConfig(BaseModel):
    """A plugin that takes no settings."""

    model_config = ConfigDict(extra="forbid")


SECTION_MARK = "--svrctl-section:"


def section_script(parts: dict[str, str]) -> str:
    """Join shell snippets into one command whose output marks where each one starts.

    Plugins read many things in one round trip this way; :func:`split_sections`
    takes the output apart again.
    """
    import shlex

    return "; ".join(
        f"echo {shlex.quote(SECTION_MARK + name)}; {cmd}" for name, cmd in parts.items()
    )


def split_sections(text: str, expected: Iterable[str] = ()) -> dict[str, list[str]]:
    """Split the output of a :func:`section_script` command into lines per section.

    Raises:
        ValueError: A section in ``expected`` is missing from the output.
    """
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(SECTION_MARK):
            current = out.setdefault(line[len(SECTION_MARK) :].strip(), [])
        elif current is not None:
            current.append(line)
    missing = [s for s in expected if s not in out]
    if missing:
        raise ValueError(f"the target's output lacks {', '.join(missing)}")
    return out


def builtin_modules() -> list[str]:
    """Return the modules of the built-in plugins: every module of ``svrctl.plugins``."""
    import pkgutil

    import svrctl.plugins as package

    return sorted(f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__))


def _registry() -> dict[str, type[Plugin]]:
    import importlib

    found: dict[str, type[Plugin]] = {}
    for module_name in builtin_modules():
        module = importlib.import_module(module_name)
        plugin: type[Plugin] | None = getattr(module, "PLUGIN", None)
        if plugin is not None:
            found[plugin.name] = plugin
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in found:
            found[ep.name] = ep.load()
    return found


def plugin_source(name: str) -> str:
    """Say where a plugin comes from: ``built-in`` or its entry point's distribution."""
    import importlib

    for module_name in builtin_modules():
        plugin = getattr(importlib.import_module(module_name), "PLUGIN", None)
        if plugin is not None and plugin.name == name:
            return "built-in"
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            dist = getattr(ep, "dist", None)
            return f"entry point {ep.value}" + (f" ({dist.name})" if dist is not None else "")
    return "unknown"


def plugin_names() -> list[str]:
    """Return the names of every installed plugin."""
    return sorted(_registry())


def get_plugin(name: str) -> type[Plugin]:
    """Return the plugin class called ``name``, or raise NotFoundError."""
    registry = _registry()
    if name not in registry:
        raise NotFoundError(
            f"no plugin named {name!r}; installed plugins: {', '.join(sorted(registry))}",
            field="plugin",
        )
    return registry[name]


def action_of(plugin: type[Plugin], config: BaseModel) -> str:
    """Return the action a run does: the config's ``action`` if it has one, else the first."""
    action = getattr(config, "action", None)
    if isinstance(action, str) and action in plugin.actions:
        return action
    return plugin.actions[0]


def validate_config(plugin: type[Plugin], config: dict[str, Any] | None) -> BaseModel:
    """Validate a plugin config, raising a BadInputError that names the bad field."""
    try:
        return plugin.config_model.model_validate(config or {})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "config"
        raise BadInputError(
            f"invalid config for plugin {plugin.name!r}: {where}: {err['msg']}; "
            f"`svrctl plugin show {plugin.name}` lists its settings",
            field=f"plugin_config.{where}",
        ) from None

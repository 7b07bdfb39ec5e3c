"""``svrctl plugin``: the installed plugins, their actions and config schemas."""

from __future__ import annotations

from typing import Any

import click

from svrctl.cli.app import SvrctlGroup
from svrctl.cli.render import echo_json, table

__all__ = ["plugin"]


@click.group(cls=SvrctlGroup)
def plugin() -> None:
    """List installed plugins and show their config schemas."""


def _describe(name: str) -> dict[str, Any]:
    """Return what a plugin declares, as JSON-ready data."""
    from svrctl.plugin import get_plugin, plugin_source

    cls = get_plugin(name)
    schema = cls.config_model.model_json_schema()
    return {
        "name": cls.name,
        "description": cls.description,
        "actions": list(cls.actions),
        "source": plugin_source(name),
        "config_schema": schema,
    }


@plugin.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_cmd(as_json: bool) -> None:
    """List the installed plugins."""
    from svrctl.plugin import plugin_names

    rows = [_describe(name) for name in plugin_names()]
    if as_json:
        echo_json(rows)
        return
    table(
        ["NAME", "ACTIONS", "SOURCE", "DESCRIPTION"],
        [[r["name"], ",".join(r["actions"]), r["source"], r["description"]] for r in rows],
    )


@plugin.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_cmd(name: str, as_json: bool) -> None:
    """Show a plugin: its actions and every config field with its type and default."""
    data = _describe(name)
    if as_json:
        echo_json(data)
        return
    click.echo(f"{data['name']}: {data['description']}")
    click.echo(f"actions: {', '.join(data['actions'])} (the first is the default)")
    click.echo(f"source:  {data['source']}")
    props: dict[str, Any] = data["config_schema"].get("properties", {})
    required = set(data["config_schema"].get("required", []))
    if not props:
        click.echo("config:  none")
        return
    click.echo("config (--config JSON):")
    table(
        ["FIELD", "TYPE", "DEFAULT", "DESCRIPTION"],
        [
            [
                field,
                _type(spec),
                "(required)" if field in required else _default(spec),
                spec.get("description", ""),
            ]
            for field, spec in props.items()
        ],
    )


def _type(spec: dict[str, Any]) -> str:
    """Say a JSON schema property's type in a word or two."""
    if "enum" in spec:
        return "|".join(str(v) for v in spec["enum"])
    if "anyOf" in spec:
        return " or ".join(_type(s) for s in spec["anyOf"])
    kind = str(spec.get("type", "any"))
    if kind == "array":
        return f"list of {_type(spec.get('items', {}))}"
    bounds = [
        f"{sign}{spec[key]}"
        for key, sign in (("exclusiveMinimum", ">"), ("minimum", ">="), ("maximum", "<="))
        if key in spec
    ]
    return f"{kind} {' '.join(bounds)}".strip()


def _default(spec: dict[str, Any]) -> str:
    import json

    if "default" not in spec:
        return "-"
    return json.dumps(spec["default"])

"""The ``echo`` plugin: runs ``echo`` on its target, to check the plugin route end to end."""

from __future__ import annotations

import shlex

from pydantic import BaseModel, ConfigDict, Field

from svrctl.plugin import Plugin, PluginContext, PluginResult


class EchoConfig(BaseModel):
    """Settings of the echo plugin."""

    model_config = ConfigDict(extra="forbid")

    message: str = Field(default="hello from svrctl", description="Text to echo.")
    fail: bool = Field(default=False, description="Report failure, to test alerting.")


class EchoPlugin(Plugin):
    """Echo a message on the target and report it."""

    name = "echo"
    description = "Echo a message on the target (a smoke test for plugin runs)."
    config_model = EchoConfig

    def run(self, ctx: PluginContext, config: BaseModel) -> PluginResult:
        """Run ``echo MESSAGE`` through the context's runner."""
        assert isinstance(config, EchoConfig)
        result = ctx.runner.run(f"echo {shlex.quote(config.message)}", timeout=ctx.timeout)
        if not result.success:
            return PluginResult(success=False, summary=result.error_text or "echo failed")
        said = result.stdout.strip()
        return PluginResult(
            success=not config.fail,
            summary=f"{ctx.runner.name} said: {said}",
            details=f"```\n{result.stdout}```",
        )


PLUGIN = EchoPlugin

"""Secrets live in Prefect Secret blocks; svrctl stores only their names."""

from __future__ import annotations

from typing import Any

from svrctl.exceptions import SecretError

__all__ = ["prefect_secret", "save_prefect_secret"]


def prefect_secret(name: str) -> str:
    """Return the value of the Prefect Secret block ``name``."""
    from prefect.blocks.system import Secret

    try:
        block: Secret[Any] = Secret.load(name, _sync=True)  # type: ignore[call-arg,assignment]
    except ValueError as exc:
        raise SecretError(
            f"there is no Prefect Secret block named {name!r}: create it with "
            f"`svrctl secret set {name}` or on the Blocks page of Prefect's UI"
        ) from exc
    except Exception as exc:
        raise SecretError(
            f"cannot read the Prefect Secret block {name!r}: {exc.__class__.__name__}. "
            "Check that the Prefect API (PREFECT_API_URL) is reachable."
        ) from None
    value = block.get()
    return value if isinstance(value, str) else str(value)


def save_prefect_secret(name: str, value: str) -> None:
    """Create or overwrite the Prefect Secret block ``name``."""
    from prefect.blocks.system import Secret
    from pydantic import SecretStr

    block: Secret[Any] = Secret(value=SecretStr(value))
    block.save(name, overwrite=True, _sync=True)  # type: ignore[call-arg]

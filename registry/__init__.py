"""The HTTP server: translates the OCI Distribution API and auth into storage calls and back.

The front door: `create_app` builds the ASGI application from `Settings` (`load_settings` reads
them from YAML and CARGOBAY_* variables); `registry serve` (registry/__main__.py) runs it under
uvicorn. Nothing else imports this package but tests.

The names load on first use (PEP 562): `registry gc` and the other commands run as
`python -m registry`, which imports this package first, and should not pay for the whole
server (Starlette, the handlers, the proxy) when they use none of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .settings import Settings, SettingsError, load_settings

__all__ = ["Settings", "SettingsError", "create_app", "load_settings"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    if name in ("Settings", "SettingsError", "load_settings"):
        from . import settings

        return getattr(settings, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

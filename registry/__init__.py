"""The HTTP server: translates the OCI Distribution API and auth into storage calls and back.

The front door: `create_app` builds the ASGI application from `Settings` (`load_settings` reads
them from YAML and CARGOBAY_* variables); `registry serve` (registry/__main__.py) runs it under
uvicorn. Nothing else imports this package but tests.
"""

from .app import create_app
from .settings import Settings, SettingsError, load_settings

__all__ = ["Settings", "SettingsError", "create_app", "load_settings"]

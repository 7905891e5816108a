"""`registry serve …` / `python -m registry serve …`: start the server."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from typing import Any

from storage import StorageError

from .cpus import usable_cpus
from .errors import RegistryBaseError
from .settings import Settings, load_settings, settings_from_dict, to_dict

SETTINGS_ENV = "CARGOBAY__SETTINGS_JSON"  # hands resolved settings to uvicorn worker processes


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="registry", description="Cargobay OCI registry")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the registry server")
    serve.add_argument("--config", help="YAML settings file (CARGOBAY_* variables override it)")
    serve.add_argument("--host", help="listen address (http.host)")
    serve.add_argument("--port", type=int, help="listen port (http.port)")
    serve.add_argument("--root", help="filesystem storage root (storage.filesystem.root)")
    serve.add_argument("--workers", type=int, help="worker processes (http.workers)")
    serve.add_argument("--delete", action="store_true", default=None,
                       help="allow DELETE of manifests, tags and blobs (storage.delete.enabled; off by default)")
    from .auth.cli import add_commands

    add_commands(sub)  # robot create, user add|remove, auth keygen
    from . import lifecycle

    lifecycle.add_commands(sub)  # retention, usage, check …
    from . import audit

    audit.add_command(sub)  # the parser only: reading the trail loads when the command runs
    return parser


def app_from_environment():  # type: ignore[no-untyped-def]
    """uvicorn factory for worker processes: rebuilds the app from the settings the parent resolved."""
    from . import logs
    from .allocator import keep_freed_memory
    from .app import create_app

    keep_freed_memory()
    settings = settings_from_dict(json.loads(os.environ[SETTINGS_ENV]))
    logs.configure(settings.log)
    return create_app(settings)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """What uvicorn.run gets besides the app: the listener, our protocol with its connection limits,
    timeouts, TLS and logging."""
    from . import tls
    from .server import ConnectionLimits, RegistryHttpProtocol

    http = settings.http
    limits = ConnectionLimits(header_timeout=http.header_timeout, max_connections=http.max_connections)
    options: dict[str, Any] = {
        # Logging is ours (registry.logs): uvicorn neither configures it nor writes its own access log.
        "host": http.host, "port": http.port, "log_level": settings.log.level, "log_config": None, "access_log": False,
        "http": functools.partial(RegistryHttpProtocol, limits=limits), "loop": "uvloop",
        "timeout_keep_alive": http.keepalive_timeout, "server_header": False, "date_header": True,
        "proxy_headers": bool(http.trusted_proxies), "forwarded_allow_ips": http.trusted_proxies or None,
    }
    if tls.enabled(http.tls):
        options["ssl_context_factory"] = tls.context_factory(http.tls)
    return options


def serve(settings: Settings) -> None:
    import uvicorn

    from . import logs, metrics, tls
    from .allocator import keep_freed_memory
    from .store import shared_link_board, storage_driver

    keep_freed_memory()  # this process serves when there is one worker (each worker sets its own)
    logs.configure(settings.log)
    tls.check(settings.http.tls)  # fail fast, with one line, on unusable certificate or key files
    driver = storage_driver(settings)
    driver.check()  # and on unusable storage
    if settings.audit.path:
        from .audit import check_file

        check_file(settings.audit.path)  # and on an audit file no worker could append to
    workers = settings.http.workers or usable_cpus()
    if settings.auth.enabled and workers > 1:
        from .auth.service import AuthService

        AuthService.from_settings(settings)  # fail fast on unusable auth files; make the key once, here
    options = uvicorn_options(settings)
    # Before anything imports prometheus_client, which picks in-process values or the workers' shared
    # files when it loads (registry.metrics.multiprocess); the workers inherit the directory.
    with metrics.multiprocess_dir(workers, settings.metrics.enabled), shared_link_board(settings, driver, workers):
        from .app import create_app, create_metrics_app

        if workers > 1:
            # Each worker builds the app from the settings: build it here first, once, so that what
            # would stop a worker (a bad rule, an unreadable key file) stops the start in one line,
            # instead of every worker failing and being started again.
            create_app(settings)

        listener = None
        if settings.metrics.enabled and settings.metrics.listen:
            listener = metrics.OwnListener(create_metrics_app(settings), settings.metrics.listen, options)
            listener.start()
        try:
            if workers > 1:
                os.environ[SETTINGS_ENV] = json.dumps(to_dict(settings))
                uvicorn.run("registry.__main__:app_from_environment", factory=True, workers=workers, **options)
            else:
                uvicorn.run(create_app(settings), **options)
        finally:
            if listener is not None:
                listener.stop()


def lifecycle_commands() -> dict[str, str]:
    from .lifecycle import COMMANDS

    return COMMANDS


def _one_line(exc: Exception) -> str:
    """What a failed command prints: its error on one line (an OSError as `reason: file`)."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return " ".join(f"{exc.strerror}: {exc.filename}".split())
    return " ".join(str(exc).split())


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config or os.environ.get("CARGOBAY_CONFIG"), overrides={
            "http.host": getattr(args, "host", None), "http.port": getattr(args, "port", None),
            "http.workers": getattr(args, "workers", None), "storage.filesystem.root": getattr(args, "root", None),
            "storage.delete.enabled": getattr(args, "delete", None),
        })
        if args.command == "serve":
            serve(settings)
        elif args.command == "audit":
            from . import audit

            return audit.run(args, settings)
        elif args.command in lifecycle_commands():
            from . import lifecycle

            return lifecycle.run(args, settings)
        else:
            from .auth import cli

            return cli.run(args, settings)
    except (RegistryBaseError, StorageError, OSError) as exc:
        print(f"registry: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The lifecycle commands of `registry`: each is one module of this package with `add_command(sub)`
(its argparse subcommand) and `run(args, settings) -> int` (its exit status; failures are raised
as RegistryBaseError or StorageError, which `registry` prints as one line)."""

from __future__ import annotations

import argparse
from types import ModuleType
from typing import Any

from ..settings import Settings

# name -> module; each module is imported when its command runs (a command loads only what it needs).
COMMANDS: dict[str, str] = {}
COMMANDS["gc"] = "gc"
COMMANDS["retention"] = "retention_cli"
COMMANDS["usage"] = "usage"
COMMANDS["check"] = "check"


def _module(name: str) -> ModuleType:
    import importlib

    return importlib.import_module(f".{COMMANDS[name]}", __package__)


def add_commands(sub: Any) -> None:
    for name in COMMANDS:
        _module(name).add_command(sub)


def run(args: argparse.Namespace, settings: Settings) -> int:
    status: int = _module(args.command).run(args, settings)
    return status

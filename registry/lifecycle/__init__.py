"""Keeping the store clean, safe and within budget while CI pushes all day (docs/lifecycle.md):
garbage collection, retention, immutable tags, quotas and the scrub, as commands
(`registry gc|retention|usage|check`, registry.lifecycle.cli) and as jobs `registry serve` runs on
a schedule (registry.lifecycle.schedule)."""

from __future__ import annotations

from .cli import COMMANDS, add_commands, run

__all__ = ["COMMANDS", "add_commands", "run"]

"""When each user last logged out of the web console (`v1/logouts/<hashed name>`). Console
sessions are signed cookies that no server keeps, so a logout is made real here: every replica
refuses a session issued before its user's last logout, a copied cookie included."""

from __future__ import annotations

import json
import time

from . import paths
from .driver.base import StorageDriver
from .errors import PathNotFound


def record_logout(driver: StorageDriver, user: str, at: float | None = None) -> None:
    driver.put(paths.logout(user), json.dumps({"at": time.time() if at is None else at}).encode())


def last_logout(driver: StorageDriver, user: str) -> float | None:
    """When `user` last logged out; None if never (or the record is debris)."""
    try:
        record = json.loads(driver.get(paths.logout(user)))
    except (PathNotFound, ValueError):
        return None
    at = record.get("at") if isinstance(record, dict) else None
    return float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else None

"""Progress events and how they look: bars on a terminal, plain lines otherwise, JSON for scripts.

`pull` emits `Event`s; a renderer turns each into text (possibly empty) and the CLI writes that text
(this module never prints). Event kinds and their fields:

- `resolved`: reference, digest (of the image manifest), platform (null unless an index named it), layers, size
- `up-to-date`: reference, digest
- `blob-exists`: digest, size, role (`config` | `layer`)
- `blob-wait`: digest, role (another puller process is fetching it)
- `blob-start`: digest, size, role, offset (> 0 when resuming a partial download)
- `blob-progress`: digest, done, size
- `blob-done`: digest, size, role
- `done`: reference, digest, downloaded (bytes), elapsed (seconds)
- `pushed`: reference, digest, uploaded (bytes), elapsed (seconds)
- `warning`: message
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    kind: str
    fields: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]


Emit = Callable[[Event], None]


def human_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


class JsonRenderer:
    """One JSON object per line; `blob-progress` at most every 0.25 s per blob (and at the end)."""

    def __init__(self, interval: float = 0.25) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}

    def handle(self, event: Event) -> str:
        if event.kind == "blob-progress":
            now = time.monotonic()
            key = event["digest"]
            if now - self._last.get(key, 0.0) < self._interval and event["done"] < event["size"]:
                return ""
            self._last[key] = now
        return json.dumps({"event": event.kind, **event.fields}, sort_keys=True) + "\n"

    def finish(self) -> str:
        return ""


class PlainRenderer:
    """Line per state change, like `docker pull` when not on a terminal; `quiet` keeps only the end."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet

    def handle(self, event: Event) -> str:
        k, f = event.kind, event.fields
        if self.quiet:
            return ""
        if k == "resolved":
            where = f"{f['platform']}, " if f.get("platform") else ""
            return (f"{f['reference']}: resolved to {f['digest']} "
                    f"({where}{f['layers']} layers, {human_size(f['size'])})\n")
        if k == "blob-exists":
            return f"{short(f['digest'])}: already exists\n"
        if k == "blob-wait":
            return f"{short(f['digest'])}: waiting for another puller\n"
        if k == "blob-start":
            resume = f" (resuming at {human_size(f['offset'])})" if f.get("offset") else ""
            return f"{short(f['digest'])}: downloading {human_size(f['size'])}{resume}\n"
        if k == "blob-done":
            return f"{short(f['digest'])}: verified\n"
        if k == "up-to-date":
            return f"Status: image is up to date for {f['reference']}\nDigest: {f['digest']}\n"
        if k == "done":
            return (f"Status: downloaded {human_size(f['downloaded'])} in {f['elapsed']:.1f}s for {f['reference']}\n"
                    f"Digest: {f['digest']}\n")
        if k == "pushed":
            return (f"Status: pushed {f['reference']} ({human_size(f['uploaded'])} uploaded in {f['elapsed']:.1f}s)\n"
                    f"Digest: {f['digest']}\n")
        if k == "warning":
            return f"warning: {f['message']}\n"
        return ""

    def finish(self) -> str:
        return ""


@dataclass
class _Bar:
    digest: str
    size: int
    done: int = 0
    state: str = "waiting"


class TtyRenderer:
    """Redraws one bar per blob plus a total, at most every 0.1 s, with ANSI cursor movement."""

    WIDTH = 30

    def __init__(self, interval: float = 0.1) -> None:
        self._bars: dict[str, _Bar] = {}
        self._drawn = 0
        self._last = 0.0
        self._interval = interval
        self._header = ""
        self._lock = threading.Lock()

    def _bar_line(self, label: str, done: int, size: int, state: str) -> str:
        frac = done / size if size else 1.0
        filled = int(frac * self.WIDTH)
        bar = "=" * filled + (">" if filled < self.WIDTH else "") + " " * max(self.WIDTH - filled - 1, 0)
        return f"{label:<12} [{bar}] {human_size(done):>9} / {human_size(size):<9} {state}"

    def _frame(self) -> str:
        lines = [self._header] if self._header else []
        total = sum(b.size for b in self._bars.values())
        done = sum(b.done for b in self._bars.values())
        for bar in self._bars.values():
            lines.append(self._bar_line(short(bar.digest), bar.done, bar.size, bar.state))
        if self._bars:
            lines.append(self._bar_line("total", done, total, ""))
        up = f"\x1b[{self._drawn}F" if self._drawn else ""
        self._drawn = len(lines)
        return up + "".join(f"\x1b[2K{line}\n" for line in lines)

    def handle(self, event: Event) -> str:
        k, f = event.kind, event.fields
        with self._lock:
            if k == "resolved":
                self._header = f"{f['reference']}" + (f" ({f['platform']})" if f.get("platform") else "")
            elif k in ("blob-exists", "blob-wait", "blob-start", "blob-progress", "blob-done"):
                bar = self._bars.setdefault(f["digest"], _Bar(f["digest"], f.get("size", 0)))
                bar.size = f.get("size", bar.size)
                if k == "blob-exists":
                    bar.done, bar.state = bar.size, "exists"
                elif k == "blob-wait":
                    bar.state = "waiting for another puller"
                elif k == "blob-start":
                    bar.done, bar.state = f.get("offset", 0), "downloading"
                elif k == "blob-progress":
                    bar.done = f["done"]
                    now = time.monotonic()
                    if now - self._last < self._interval:
                        return ""
                    self._last = now
                else:
                    bar.done, bar.state = bar.size, "verified"
            elif k in ("up-to-date", "done", "pushed", "warning"):
                frame = self._frame() if self._bars else ""
                self._drawn = 0
                return frame + PlainRenderer().handle(event)
            else:
                return ""
            return self._frame()

    def finish(self) -> str:
        return ""

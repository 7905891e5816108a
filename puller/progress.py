"""Progress events and how they look: bars on a terminal, plain lines otherwise, JSON for scripts.

`pull` and `push` emit `Event`s; a renderer turns each into text (possibly empty) and the CLI
writes that text (this module never prints). Event kinds and their fields (one TypedDict per kind
below; `Event`'s overloads make the type checker hold each emitter to its kind's fields):

- `resolved`: reference, digest (of the image manifest), platform (null unless an index named it), layers, size
- `up-to-date`: reference, digest
- `blob-exists`: digest, size, role (`config` | `layer`)
- `blob-wait`: digest, size, role (another puller process is fetching it)
- `blob-start`: digest, size, role, offset (> 0 when resuming a partial download)
- `blob-progress`: digest, done, size
- `blob-done`: digest, size, role
- `done`: reference, digest, downloaded (bytes), elapsed (seconds)
- `layer-applied`: digest, index (1 for the bottom layer), layers (`puller pull`: the layer is in the rootfs
  being built)
- `unpacked`: reference, digest, path, elapsed (seconds) (`puller pull`: the rootfs is in place)
- `pushed`: reference, digest, uploaded (bytes), elapsed (seconds)
- `warning`: message
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, TypedDict, cast, overload


class ResolvedFields(TypedDict):
    reference: str
    digest: str
    platform: str | None
    layers: int
    size: int


class UpToDateFields(TypedDict):
    reference: str
    digest: str


class BlobFields(TypedDict):
    """`blob-exists`, `blob-wait`, `blob-done`."""

    digest: str
    size: int
    role: str


class BlobStartFields(BlobFields):
    offset: int


class BlobProgressFields(TypedDict):
    digest: str
    done: int
    size: int


class DoneFields(TypedDict):
    reference: str
    digest: str
    downloaded: int
    elapsed: float


class LayerAppliedFields(TypedDict):
    digest: str
    index: int
    layers: int


class UnpackedFields(TypedDict):
    reference: str
    digest: str
    path: str
    elapsed: float


class PushedFields(TypedDict):
    reference: str
    digest: str
    uploaded: int
    elapsed: float


class WarningFields(TypedDict):
    message: str


EventKind = Literal["resolved", "up-to-date", "blob-exists", "blob-wait", "blob-start", "blob-progress",
                    "blob-done", "done", "layer-applied", "unpacked", "pushed", "warning"]
EventFields = (ResolvedFields | UpToDateFields | BlobFields | BlobStartFields | BlobProgressFields | DoneFields
               | LayerAppliedFields | UnpackedFields | PushedFields | WarningFields)


@dataclass(frozen=True, init=False)
class Event:
    """One progress event: its kind and that kind's fields (checked per kind by the type checker)."""

    kind: EventKind
    fields: EventFields

    @overload
    def __init__(self, kind: Literal["resolved"], fields: ResolvedFields) -> None: ...
    @overload
    def __init__(self, kind: Literal["up-to-date"], fields: UpToDateFields) -> None: ...
    @overload
    def __init__(self, kind: Literal["blob-exists", "blob-wait", "blob-done"], fields: BlobFields) -> None: ...
    @overload
    def __init__(self, kind: Literal["blob-start"], fields: BlobStartFields) -> None: ...
    @overload
    def __init__(self, kind: Literal["blob-progress"], fields: BlobProgressFields) -> None: ...
    @overload
    def __init__(self, kind: Literal["done"], fields: DoneFields) -> None: ...
    @overload
    def __init__(self, kind: Literal["layer-applied"], fields: LayerAppliedFields) -> None: ...
    @overload
    def __init__(self, kind: Literal["unpacked"], fields: UnpackedFields) -> None: ...
    @overload
    def __init__(self, kind: Literal["pushed"], fields: PushedFields) -> None: ...
    @overload
    def __init__(self, kind: Literal["warning"], fields: WarningFields) -> None: ...
    def __init__(self, kind: EventKind, fields: EventFields) -> None:
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "fields", fields)

    def __getitem__(self, key: str) -> object:
        return cast("dict[str, object]", self.fields)[key]


Emit = Callable[[Event], None]


class Renderer(Protocol):
    """Turns events into text for the CLI to write (possibly empty)."""

    def handle(self, event: Event) -> str: ...
    def finish(self) -> str: ...


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
            progress = cast(BlobProgressFields, event.fields)
            now = time.monotonic()
            key = progress["digest"]
            if now - self._last.get(key, 0.0) < self._interval and progress["done"] < progress["size"]:
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
        k = event.kind
        if self.quiet:
            return ""
        if k == "resolved":
            r = cast(ResolvedFields, event.fields)
            where = f"{r['platform']}, " if r.get("platform") else ""
            return (f"{r['reference']}: resolved to {r['digest']} "
                    f"({where}{r['layers']} layers, {human_size(r['size'])})\n")
        if k == "blob-exists":
            return f"{short(cast(BlobFields, event.fields)['digest'])}: already exists\n"
        if k == "blob-wait":
            return f"{short(cast(BlobFields, event.fields)['digest'])}: waiting for another puller\n"
        if k == "blob-start":
            b = cast(BlobStartFields, event.fields)
            resume = f" (resuming at {human_size(b['offset'])})" if b.get("offset") else ""
            return f"{short(b['digest'])}: downloading {human_size(b['size'])}{resume}\n"
        if k == "blob-done":
            return f"{short(cast(BlobFields, event.fields)['digest'])}: verified\n"
        if k == "up-to-date":
            u = cast(UpToDateFields, event.fields)
            return f"Status: image is up to date for {u['reference']}\nDigest: {u['digest']}\n"
        if k == "done":
            d = cast(DoneFields, event.fields)
            return (f"Status: downloaded {human_size(d['downloaded'])} in {d['elapsed']:.1f}s for {d['reference']}\n"
                    f"Digest: {d['digest']}\n")
        if k == "layer-applied":
            a = cast(LayerAppliedFields, event.fields)
            return f"{short(a['digest'])}: applied (layer {a['index']}/{a['layers']})\n"
        if k == "unpacked":
            u = cast(UnpackedFields, event.fields)
            return f"Unpacked {u['reference']} into {u['path']} ({u['elapsed']:.1f}s)\n"
        if k == "pushed":
            p = cast(PushedFields, event.fields)
            return (f"Status: pushed {p['reference']} ({human_size(p['uploaded'])} uploaded in {p['elapsed']:.1f}s)\n"
                    f"Digest: {p['digest']}\n")
        if k == "warning":
            return f"warning: {cast(WarningFields, event.fields)['message']}\n"
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
        self._dirty = False  # a bar changed since the last frame
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
        self._dirty = False
        return up + "".join(f"\x1b[2K{line}\n" for line in lines)

    def handle(self, event: Event) -> str:
        k = event.kind
        with self._lock:
            if k == "resolved":
                r = cast(ResolvedFields, event.fields)
                self._header = f"{r['reference']}" + (f" ({r['platform']})" if r.get("platform") else "")
            elif k in ("blob-exists", "blob-wait", "blob-start", "blob-progress", "blob-done"):
                # Every blob event has digest and size (blob-start an offset, blob-progress done).
                f = cast(BlobStartFields | BlobProgressFields, event.fields)
                bar = self._bars.setdefault(f["digest"], _Bar(f["digest"], f.get("size", 0)))
                bar.size = f.get("size", bar.size)
                if k == "blob-exists":
                    bar.done, bar.state = bar.size, "exists"
                elif k == "blob-wait":
                    bar.state = "waiting for another puller"
                elif k == "blob-start":
                    bar.done, bar.state = cast(BlobStartFields, f).get("offset", 0), "downloading"
                elif k == "blob-progress":
                    bar.done = cast(BlobProgressFields, f)["done"]
                    now = time.monotonic()
                    if now - self._last < self._interval:
                        self._dirty = True  # drawn with the next frame
                        return ""
                    self._last = now
                else:
                    bar.done, bar.state = bar.size, "verified"
            elif k == "layer-applied":
                applied = self._bars.get(cast(LayerAppliedFields, event.fields)["digest"])
                if applied is None:  # an up-to-date image: no download bars
                    return ""
                applied.state = "applied"
            elif k in ("up-to-date", "done", "unpacked", "pushed", "warning"):
                # The bars as they ended when a throttled change is not drawn yet, then the line.
                frame = self._frame() if self._bars and self._dirty else ""
                self._drawn = 0
                return frame + PlainRenderer().handle(event)
            else:
                return ""
            return self._frame()

    def finish(self) -> str:
        return ""

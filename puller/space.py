"""Keeping free space on the filesystems puller writes to: the store, a rootfs, an archive.

A node whose disk fills up stops working (the kubelet evicts pods, logs and databases fail), and
what a layer unpacks to is not known before it is unpacked: 20 GiB of one repeated byte compress to
a few MiB. So every write that can be large (blob downloads into the store, layer contents being
unpacked, export archives) is charged to a `SpaceGuard`, which looks at the target filesystem
(`statvfs`) every `CHECK_EVERY` bytes and stops the write (InsufficientSpace, exit status 8) before
the free space there falls below the reserve. The caller then removes what it wrote (a partial
rootfs or archive); a partial download stays in the store to be resumed.

The reserve is the larger of 5% of the filesystem and 1 GiB unless `--min-free-space` or the
config's `min_free_space` say otherwise: a size ("2GiB", "500M", bytes) or a percentage ("10%");
0 turns the check off (a full filesystem is still one line and exit status 8).
"""

from __future__ import annotations

import errno
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from .errors import InsufficientSpace

GiB = 1024**3
#: How many bytes may be written between two looks at the free space.
CHECK_EVERY = 4 << 20
#: errnos of a full filesystem or an exhausted quota.
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str) -> int:
    """`20G`, `2GiB`, `500MB`, `1.5g` or plain bytes (units are binary); ValueError otherwise."""
    t = text.strip().lower().replace(" ", "").removesuffix("b").removesuffix("i")
    try:
        value = float(t[:-1]) * _UNITS[t[-1]] if t and t[-1] in _UNITS else float(t) if "." in t else int(t)
    except ValueError:
        raise ValueError(f"invalid size {text!r}") from None
    if not value >= 0 or value == float("inf"):  # also NaN
        raise ValueError(f"invalid size {text!r}")
    return int(value)


def format_size(n: float) -> str:
    """Binary units: `1.0 GiB`, `512 B`."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@dataclass(frozen=True)
class Reserve:
    """Free space to leave on a filesystem: `percent` of its size, at least `minimum` bytes."""

    percent: float = 5.0
    minimum: int = GiB

    def bytes_for(self, fs_size: int) -> int:
        return max(int(fs_size * self.percent / 100), self.minimum)

    def __str__(self) -> str:
        if self.percent and self.minimum:
            return f"{self.percent:g}% of the filesystem, at least {format_size(self.minimum)}"
        if self.percent:
            return f"{self.percent:g}% of the filesystem"
        return format_size(self.minimum)


DEFAULT_RESERVE = Reserve()
NO_RESERVE = Reserve(0.0, 0)


def parse_reserve(value: str | int) -> Reserve:
    """`"10%"`, `"2GiB"`, `0` or a number of bytes; ValueError saying what is wrong."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid free-space reserve {value} (a size or a percentage, not negative)")
        return Reserve(0.0, value)
    text = value.strip()
    if text.endswith("%"):
        try:
            percent = float(text[:-1])
        except ValueError:
            percent = -1.0
        if not 0 <= percent < 100:
            raise ValueError(f"invalid free-space reserve {value!r} (a percentage from 0 to below 100)")
        return Reserve(percent, 0)
    try:
        return Reserve(0.0, parse_size(text))
    except ValueError:
        raise ValueError(f"invalid free-space reserve {value!r} (a size such as 2GiB, or a percentage such as "
                         "5%)") from None


def full(what: str, path: Path | str) -> InsufficientSpace:
    """The error for a write that failed with ENOSPC/EDQUOT."""
    return InsufficientSpace(f"{what} stopped: no space left on the filesystem of {path}")


class SpaceGuard:
    """Stops writes to the filesystem of `path` before its free space falls below `reserve`.
    Thread-safe: concurrent downloads share one guard. `what` names the operation in messages."""

    def __init__(self, path: Path | str, reserve: Reserve, what: str) -> None:
        self.path = Path(path)
        self.reserve = reserve
        self.what = what
        st = os.statvfs(self.path)
        self.keep = reserve.bytes_for(st.f_blocks * st.f_frsize)
        self._since = 0
        self._lock = threading.Lock()

    def free(self) -> int:
        """Bytes available to this process (not counting the blocks kept for root)."""
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def _how(self) -> str:
        return f"(reserve: {self.reserve}; --min-free-space or min_free_space in the config change it)"

    def check(self, upcoming: int = 0) -> None:
        """InsufficientSpace unless `upcoming` more bytes still leave the reserve free (before a
        write starts)."""
        if not self.keep:
            return
        free = self.free()
        if free - upcoming >= self.keep:
            return
        if upcoming:
            raise InsufficientSpace(f"{self.what}: {format_size(upcoming)} to write, but {self.path} has "
                                    f"{format_size(free)} free and {format_size(self.keep)} must stay free "
                                    f"{self._how()}")
        raise InsufficientSpace(f"{self.what}: {self.path} has only {format_size(free)} free, and "
                                f"{format_size(self.keep)} must stay free {self._how()}")

    def charge(self, n: int) -> None:
        """Count `n` bytes about to be written. Every CHECK_EVERY bytes, look at the filesystem: when
        the next CHECK_EVERY would take it below the reserve, stop now, so that it never gets there."""
        with self._lock:
            self._since += n
            due = self._since >= CHECK_EVERY
            if due:
                self._since = 0
        if not due or not self.keep:
            return
        free = self.free()
        if free - CHECK_EVERY < self.keep:
            raise InsufficientSpace(f"{self.what} stopped: writing on would leave less than {format_size(self.keep)} "
                                    f"free on {self.path} ({format_size(free)} free now) {self._how()}")

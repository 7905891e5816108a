"""Where an unpack may write: `check_dest`, a destination that is absent or an empty directory.

Apart from the unpacker so that `puller pull` can refuse a bad destination before it downloads
anything without loading the unpacker (tarfile and the rest), which it then loads while the first
layer downloads."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import UsageError


def check_dest(dest: Path) -> None:
    """UsageError unless `dest` is absent or an empty directory (what an unpack may write to)."""
    try:
        st = dest.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{dest} exists and is not a directory")
    with os.scandir(dest) as entries:
        if any(True for _ in entries):
            raise UsageError(f"{dest} is not empty")

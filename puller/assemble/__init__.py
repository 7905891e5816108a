"""Assembly: stored blobs → a root filesystem, a runtime bundle or an archive.

`unpack` (layers applied in order, safely; `Unpacker` takes them one at a time), `layerstream`
(decompressed, verified layer bytes under a size budget), `tarsafe` and `confine` (tar entries
applied only below the root, never through a symlink), `runtimespec` (the OCI runtime config of a
bundle), `export` (oci-archive, docker-archive). Other puller modules import it only from here.

Each name loads its module on first use: `unpack` and `pull` do not load the exporter."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .dest import check_dest
    from .export import FORMATS, export_image
    from .runtimespec import ImageConfigError
    from .unpack import Unpacker, image_config, unpack_image

_LAZY = {"FORMATS": "export", "export_image": "export", "ImageConfigError": "runtimespec",
         "check_dest": "dest", **dict.fromkeys(("Unpacker", "image_config", "unpack_image"), "unpack")}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["FORMATS", "ImageConfigError", "Unpacker", "check_dest", "export_image", "image_config", "unpack_image"]

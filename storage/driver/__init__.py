"""Storage drivers: a small synchronous protocol over opaque `/`-separated keys (see base)."""

from .base import FileInfo, FileWriter, StorageDriver

__all__ = ["FileInfo", "FileWriter", "StorageDriver"]

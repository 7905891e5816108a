"""Storage drivers: a small synchronous protocol over opaque `/`-separated keys (see base)."""

from .base import DriverCapabilities, FileInfo, FileWriter, StorageDriver

__all__ = ["DriverCapabilities", "FileInfo", "FileWriter", "StorageDriver"]

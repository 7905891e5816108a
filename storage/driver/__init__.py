"""Storage drivers: a small synchronous protocol over opaque `/`-separated keys (see base)."""

from .base import DriverCapabilities, FileInfo, FileWriter, StorageDriver
from .observed import DriverObserver, ObservedDriver

__all__ = ["DriverCapabilities", "DriverObserver", "FileInfo", "FileWriter", "ObservedDriver", "StorageDriver"]

"""Builds a driver from its options: the one place that knows every driver by name."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import StorageConfigError
from .base import StorageDriver
from .fs import FilesystemDriver, FilesystemOptions
from .s3.options import S3Options

#: The options of any driver; each driver's dataclass names its settings, defaults and limits.
DriverOptions = FilesystemOptions | S3Options

_KINDS: dict[str, Callable[[Mapping[str, Any]], DriverOptions]] = {
    "filesystem": FilesystemOptions.from_mapping,
    "s3": S3Options.from_mapping,
}


def driver_options(kind: str, values: Mapping[str, Any]) -> DriverOptions:
    """The options of driver `kind` (`filesystem` or `s3`) from a plain mapping such as that
    driver's settings section; bad names or values are StorageConfigError (one line)."""
    build = _KINDS.get(kind)
    if build is None:
        raise StorageConfigError(f"unknown storage driver {kind!r} (known: {', '.join(_KINDS)})")
    return build(values)


def open_driver(options: DriverOptions) -> StorageDriver:
    """The driver those options are for. S3 needs boto3, imported only here, so that a missing
    S3 extra is one line naming the fix for those who use S3 and nothing for anyone else."""
    if isinstance(options, FilesystemOptions):
        return FilesystemDriver(options)
    try:
        from .s3.driver import S3Driver
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in ("boto3", "botocore"):
            raise
        raise StorageConfigError(f"storage.driver s3 needs {missing}, which is not installed: "
                                 "pip install 'cargobay[s3]'") from None
    return S3Driver(options)

"""Builds a driver from the `storage` settings: the one place that knows every driver by name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import StorageConfigError
from .base import StorageDriver


def create_driver(kind: str, options: Mapping[str, Any]) -> StorageDriver:
    """`kind` is `filesystem` or `s3`; `options` is that driver's settings section."""
    if kind == "filesystem":
        from .fs import FilesystemDriver

        root = options.get("root")
        if not root:
            raise StorageConfigError("storage.filesystem.root is required")
        return FilesystemDriver(str(root))
    if kind == "s3":
        try:
            from .s3 import S3Driver  # imported here so boto3 is needed only by those who use S3
        except ModuleNotFoundError as exc:
            missing = (exc.name or "").split(".")[0]
            if missing not in ("boto3", "botocore"):
                raise
            raise StorageConfigError(f"storage.driver s3 needs {missing}, which is not installed: "
                                     "pip install 'cargobay[s3]'") from None
        return S3Driver.from_options(options)
    raise StorageConfigError(f"unknown storage driver {kind!r} (known: filesystem, s3)")

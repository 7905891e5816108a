"""The S3 driver's options as a settings section gives them: names checked, values converted
(settings normally give the right types; text from the environment is parsed)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import StorageConfigError


def driver_arguments(options: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments for S3Driver from a settings section; None means the default. Unknown
    names and unconvertible values are StorageConfigError."""
    kwargs: dict[str, Any] = {}
    for name, value in options.items():
        conv = _OPTION_TYPES.get(name)
        if conv is None:
            raise StorageConfigError(f"unknown storage.s3 option {name!r} (known: {', '.join(sorted(_OPTION_TYPES))})")
        if value is None:
            continue
        try:
            kwargs[name] = conv(value)
        except (TypeError, ValueError):
            raise StorageConfigError(f"storage.s3.{name} has an invalid value {value!r}") from None
    if "bucket" not in kwargs:
        raise StorageConfigError("storage.s3.bucket is required")
    return kwargs


def _to_bool(value: Any) -> bool:
    text = str(value).strip().lower()
    if text not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(value)
    return text in ("true", "1", "yes")


# Option name -> conversion.
_OPTION_TYPES: dict[str, Callable[[Any], Any]] = {
    **dict.fromkeys(("bucket", "prefix", "region", "endpoint_url", "addressing_style", "access_key", "secret_key",
                     "session_token", "retry_mode"), str),
    **dict.fromkeys(("part_size", "max_attempts", "max_pool_connections", "multipart_copy_threshold",
                     "multipart_copy_part_size", "page_size"), int),
    **dict.fromkeys(("connect_timeout", "read_timeout"), float),
    **dict.fromkeys(("redirect", "verify_prefixes"), _to_bool),
}

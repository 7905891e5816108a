"""The S3 driver's options: every name, type, default and limit in one frozen dataclass. Importing
this needs no boto3, so options can be built and checked without the S3 extra installed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...errors import StorageConfigError
from ..options import limits, options_from_mapping

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last
MAX_PART_SIZE = 5 * 1024 * MiB  # S3's maximum part, and CopyObject's largest object
ADDRESSING_STYLES = ("auto", "path", "virtual")
RETRY_MODES = ("standard", "adaptive")
MAX_PAGE_SIZE = 1000  # S3's ceiling for one list request


@dataclass(frozen=True)
class S3Options:
    """Without `access_key`/`secret_key` credentials come from the standard AWS chain (environment,
    profile, instance or task role); None for `region`/`endpoint_url` means the chain's region and
    AWS S3. `page_size` caps list pages (tests use it to exercise pagination); `max_attempts`
    counts the first try. `verify_prefixes`: whether `list` must confirm each sub-prefix still has
    an object below it, for servers that keep reporting emptied "directories" (SeaweedFS does,
    until its asynchronous cleanup); None means detect it from the server's `Server` header.
    `prefix` is kept without leading or trailing `/`. Secrets stay out of `repr`.

    A field's `min`, `max` and `choices` (its metadata, read with storage.driver.options.option_limits)
    are what `__post_init__` enforces; the registry's settings take them, and the defaults, from
    here."""

    bucket: str = ""
    prefix: str = ""
    region: str | None = None
    endpoint_url: str | None = None
    addressing_style: str = field(default="auto", metadata=limits(choices=ADDRESSING_STYLES))
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    part_size: int = field(default=16 * MiB, metadata=limits(min=MIN_PART_SIZE, max=MAX_PART_SIZE - MIN_PART_SIZE))
    redirect: bool = False
    retry_mode: str = field(default="standard", metadata=limits(choices=RETRY_MODES))
    max_attempts: int = field(default=5, metadata=limits(min=1))
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_pool_connections: int = 50
    multipart_copy_threshold: int = field(default=64 * MiB, metadata=limits(min=MIN_PART_SIZE, max=MAX_PART_SIZE))
    multipart_copy_part_size: int = field(default=64 * MiB,
                                          metadata=limits(min=MIN_PART_SIZE, max=MAX_PART_SIZE - MIN_PART_SIZE))
    page_size: int = field(default=MAX_PAGE_SIZE, metadata=limits(min=1, max=MAX_PAGE_SIZE))
    verify_prefixes: bool | None = None

    def __post_init__(self) -> None:
        if not self.bucket:
            raise StorageConfigError("storage.s3.bucket is required")
        for ok, problem in (
            (self.addressing_style in ADDRESSING_STYLES, "addressing_style must be path, virtual or auto"),
            (self.retry_mode in RETRY_MODES, "retry_mode must be standard or adaptive"),
            ((self.access_key is None) == (self.secret_key is None), "access_key and secret_key go together"),
            (MIN_PART_SIZE <= self.part_size <= MAX_PART_SIZE - MIN_PART_SIZE, "part_size must be 5 MiB to 5 GiB"),
            (MIN_PART_SIZE <= self.multipart_copy_part_size <= MAX_PART_SIZE - MIN_PART_SIZE,
             "multipart_copy_part_size must be 5 MiB to 5 GiB"),
            (MIN_PART_SIZE <= self.multipart_copy_threshold <= MAX_PART_SIZE,
             "multipart_copy_threshold must be 5 MiB to 5 GiB"),
            (self.max_attempts >= 1 and 1 <= self.page_size <= MAX_PAGE_SIZE,
             "max_attempts must be >= 1, page_size 1 to 1000"),
        ):
            if not ok:
                raise StorageConfigError(f"storage.s3: {problem}")
        object.__setattr__(self, "prefix", self.prefix.strip("/"))  # frozen: set once, here

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> S3Options:
        """From a settings section (see storage.driver.options); unknown names are an error, so
        typos fail at start-up."""
        return options_from_mapping(cls, values, "storage.s3")

"""Debris a killed S3 writer leaves, and its removal (`S3Driver.remove_stale_temp`).

PutObject is atomic, so S3 has no half-written objects; what a crash can leave is invisible:
- a multipart upload that never completed: a server-side copy `move` started for a large object
  (its parts are billed but appear in no listing), or an appending writer's upload;
- a `check()` probe object (`.cargobay-probe-*` at the prefix root) written but not deleted.

Uploads an appending writer can still resume are recognised by their sidecar (s3_writer) and kept;
the caller's `spare` keeps whole areas (the registry's uploads, which their purge owns).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import InvalidKey, PathNotFound
from .s3_writer import META_UPLOAD_ID, abort_upload, state_full

if TYPE_CHECKING:
    from .s3 import S3Driver

PROBE_PREFIX = ".cargobay-probe-"


def probe_key(driver: S3Driver, name: str) -> str:
    """The bucket key of a `check()` probe (beside the prefix, where no logical key can be)."""
    return "/".join(filter(None, [driver.prefix, f"{PROBE_PREFIX}{name}"]))


def remove_stale_temp(driver: S3Driver, cutoff: float, spare: Callable[[str], bool] | None = None) -> int:
    return _remove_stale_probes(driver, cutoff) + _abort_stale_uploads(driver, cutoff, spare)


def _remove_stale_probes(driver: S3Driver, cutoff: float) -> int:
    kwargs: dict[str, Any] = {"Prefix": probe_key(driver, ""), "MaxKeys": driver.page_size}
    removed = 0
    while True:
        page = driver._call("list_objects_v2", PROBE_PREFIX, **kwargs)
        for obj in page.get("Contents", ()):
            if obj["LastModified"].timestamp() < cutoff:
                driver._call("delete_object", PROBE_PREFIX, Key=obj["Key"])
                removed += 1
        if not page.get("IsTruncated"):
            return removed
        kwargs["ContinuationToken"] = page["NextContinuationToken"]


def _abort_stale_uploads(driver: S3Driver, cutoff: float, spare: Callable[[str], bool] | None) -> int:
    kwargs: dict[str, Any] = {"Prefix": f"{driver.prefix}/" if driver.prefix else ""}
    aborted = 0
    while True:
        page = driver._call("list_multipart_uploads", "", **kwargs)
        for upload in page.get("Uploads", ()):
            key, upload_id = driver._logical(upload["Key"]), upload["UploadId"]
            if upload["Initiated"].timestamp() >= cutoff or (spare is not None and spare(key)):
                continue
            try:
                if _resumable(driver, key, upload_id):
                    continue
                abort_upload(driver, key, upload_id)
            except InvalidKey:
                continue  # no key this driver writes (another tool's, sharing the bucket)
            aborted += 1
        if not page.get("IsTruncated"):
            return aborted
        kwargs.update(KeyMarker=page.get("NextKeyMarker", ""), UploadIdMarker=page.get("NextUploadIdMarker", ""))


def _resumable(driver: S3Driver, key: str, upload_id: str) -> bool:
    """Whether an appending writer's saved state names this upload (a later session continues it)."""
    try:
        head = driver._call("head_object", key, Key=state_full(driver, key))
    except PathNotFound:
        return False
    return bool(head.get("Metadata", {}).get(META_UPLOAD_ID) == upload_id)

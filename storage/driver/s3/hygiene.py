"""Debris a killed S3 writer leaves, and its removal (`S3Driver.remove_stale_temp`).

PutObject is atomic, so S3 has no half-written objects; what a crash can leave is invisible:
- a multipart upload that never completed: a server-side copy `move` started for a large object
  (its parts are billed but appear in no listing), an appending writer's upload, or an atomic
  writer's (a blob that arrived whole, killed before its digest verified);
- a `check()` probe object (`.cargobay-probe-*` at the prefix root) written but not deleted.

Uploads an appending writer can still resume are recognised by their sidecar (see sidecar) and
kept; the caller's `spare` keeps what it owns (the registry's uploads while their state exists:
their purge owns them then, and their state, not a sidecar, names their multipart uploads).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ...errors import InvalidKey, PathNotFound
from ..base import PendingUpload
from .bucket import S3Bucket
from .multipart import abort_upload
from .sidecar import saved_upload_id

PROBE_PREFIX = ".cargobay-probe-"


def probe_key(bucket: S3Bucket, name: str) -> str:
    """The bucket key of a `check()` probe (beside the prefix, where no logical key can be)."""
    return "/".join(filter(None, [bucket.prefix, f"{PROBE_PREFIX}{name}"]))


def remove_stale_temp(bucket: S3Bucket, cutoff: float, spare: Callable[[str], bool] | None = None) -> int:
    return _remove_stale_probes(bucket, cutoff) + _abort_stale_uploads(bucket, cutoff, spare)


def _remove_stale_probes(bucket: S3Bucket, cutoff: float) -> int:
    kwargs: dict[str, Any] = {"Prefix": probe_key(bucket, ""), "MaxKeys": bucket.page_size}
    removed = 0
    while True:
        page = bucket.call("list_objects_v2", PROBE_PREFIX, **kwargs)
        for obj in page.get("Contents", ()):
            if obj["LastModified"].timestamp() < cutoff:
                bucket.call("delete_object", PROBE_PREFIX, Key=obj["Key"])
                removed += 1
        if not page.get("IsTruncated"):
            return removed
        kwargs["ContinuationToken"] = page["NextContinuationToken"]


def _abort_stale_uploads(bucket: S3Bucket, cutoff: float, spare: Callable[[str], bool] | None) -> int:
    kwargs: dict[str, Any] = {"Prefix": f"{bucket.prefix}/" if bucket.prefix else ""}
    aborted = 0
    while True:
        page = bucket.call("list_multipart_uploads", "", **kwargs)
        for upload in page.get("Uploads", ()):
            key, upload_id = bucket.logical_key(upload["Key"]), upload["UploadId"]
            if upload["Initiated"].timestamp() >= cutoff or (spare is not None and spare(key)):
                continue
            if "/" not in key:
                continue  # this driver writes only whole probe objects at the prefix root, never parts
            try:
                if saved_upload_id(bucket, key) == upload_id:
                    continue  # an appending writer's saved state names it: a later session continues it
                if _last_part_written(bucket, key, upload_id) >= cutoff:
                    continue  # begun long ago but still being written (a large blob on a slow link)
                abort_upload(bucket, key, upload_id)
            except InvalidKey:
                continue  # no key this driver writes (another tool's, sharing the bucket)
            aborted += 1
        if not page.get("IsTruncated"):
            return aborted
        kwargs.update(KeyMarker=page.get("NextKeyMarker", ""), UploadIdMarker=page.get("NextUploadIdMarker", ""))


def _last_part_written(bucket: S3Bucket, key: str, upload_id: str) -> float:
    """When the upload's latest part was written (0 without parts): its age since its writer last
    wrote, where `Initiated` is only when it began. Asked only of uploads begun before the cutoff."""
    kwargs: dict[str, Any] = {"Key": bucket.full_key(key), "UploadId": upload_id}
    latest = 0.0
    while True:
        try:
            page = bucket.call("list_parts", key, **kwargs)
        except PathNotFound:
            return float("inf")  # completed or aborted meanwhile: nothing to abort
        for part in page.get("Parts", ()):
            latest = max(latest, part["LastModified"].timestamp())
        if not page.get("IsTruncated"):
            return latest
        kwargs["PartNumberMarker"] = page["NextPartNumberMarker"]


def pending_uploads(bucket: S3Bucket) -> Iterator[PendingUpload]:
    """The multipart uploads below the prefix, each with whether its key's sidecar names it."""
    kwargs: dict[str, Any] = {"Prefix": f"{bucket.prefix}/" if bucket.prefix else ""}
    while True:
        page = bucket.call("list_multipart_uploads", "", **kwargs)
        for upload in page.get("Uploads", ()):
            key, upload_id = bucket.logical_key(upload["Key"]), upload["UploadId"]
            try:
                resumable = "/" in key and saved_upload_id(bucket, key) == upload_id
            except InvalidKey:
                continue  # no key this driver writes (another tool's, sharing the bucket)
            yield PendingUpload(key, upload_id, upload["Initiated"].timestamp(), resumable)
        if not page.get("IsTruncated"):
            return
        kwargs.update(KeyMarker=page.get("NextKeyMarker", ""), UploadIdMarker=page.get("NextUploadIdMarker", ""))

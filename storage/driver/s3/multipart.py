"""Multipart uploads: their lifecycle, and server-side copy of large objects in ranges
(UploadPartCopy), which `move` and appending to a committed object use. No bytes pass through
this process."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ...errors import PathNotFound
from .bucket import S3Bucket
from .options import MIN_PART_SIZE

MAX_PARTS = 10_000
_COPY_CONCURRENCY = 8


@dataclass(frozen=True, slots=True)
class Part:
    number: int
    etag: str
    size: int


def create_upload(bucket: S3Bucket, key: str) -> str:
    return str(bucket.call("create_multipart_upload", key, Key=bucket.full_key(key))["UploadId"])


def complete_upload(bucket: S3Bucket, key: str, upload_id: str, parts: list[Part]) -> None:
    bucket.call(
        "complete_multipart_upload",
        key,
        Key=bucket.full_key(key),
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": p.number, "ETag": p.etag} for p in parts]},
    )


def abort_upload(bucket: S3Bucket, key: str, upload_id: str) -> None:
    try:
        bucket.call("abort_multipart_upload", key, Key=bucket.full_key(key), UploadId=upload_id)
    except PathNotFound:
        pass  # already completed or aborted


def abort_uploads_below(bucket: S3Bucket, prefix: str) -> bool:
    """Abort every multipart upload on a key below `prefix` (their parts are invisible to object
    listings and would otherwise be billed forever). True if there was any."""
    kwargs: dict[str, Any] = {"Prefix": bucket.full_key(prefix) + "/"}
    found = False
    while True:
        page = bucket.call("list_multipart_uploads", prefix, **kwargs)
        for upload in page.get("Uploads", ()):
            abort_upload(bucket, bucket.logical_key(upload["Key"]), upload["UploadId"])
            found = True
        if not page.get("IsTruncated"):
            return found
        kwargs.update(KeyMarker=page.get("NextKeyMarker", ""), UploadIdMarker=page.get("NextUploadIdMarker", ""))


def copy_object(bucket: S3Bucket, source: str, destination: str, size: int, threshold: int, range_size: int) -> None:
    """Server-side copy of the object `source` (`size` bytes) onto `destination`, atomically for
    readers: CopyObject up to `threshold` bytes, else ranges copied in parallel into a multipart
    upload (CopyObject stops at 5 GiB; ranges are faster well before that)."""
    if size <= threshold:
        bucket.call("copy_object", destination, Key=bucket.full_key(destination),
                    CopySource={"Bucket": bucket.name, "Key": bucket.full_key(source)})
        return
    upload_id = create_upload(bucket, destination)
    try:
        parts = copy_into_upload(bucket, source, destination, upload_id, size, range_size)
        complete_upload(bucket, destination, upload_id, parts)
    except BaseException:
        abort_upload(bucket, destination, upload_id)
        raise


def copy_into_upload(bucket: S3Bucket, source: str, key: str, upload_id: str, size: int,
                     range_size: int) -> list[Part]:
    """Server-side copy of the whole object `source` (a logical key of `size` bytes) into parts
    1.. of `upload_id` on `key`, several ranges at a time. Ranges are `range_size` (the
    `multipart_copy_part_size` option); a last range under the 5 MiB minimum is merged into the
    one before, so every part but the last is valid."""
    starts = list(range(0, size, range_size))
    if len(starts) > 1 and size - starts[-1] < MIN_PART_SIZE:
        starts.pop()
    ends = [*starts[1:], size]
    copy_source = {"Bucket": bucket.name, "Key": bucket.full_key(source)}

    def copy(number: int) -> Part:
        first, last = starts[number - 1], ends[number - 1] - 1
        resp = bucket.call(
            "upload_part_copy",
            key,
            Key=bucket.full_key(key),
            UploadId=upload_id,
            PartNumber=number,
            CopySource=copy_source,
            CopySourceRange=f"bytes={first}-{last}",
        )
        return Part(number, resp["CopyPartResult"]["ETag"], last - first + 1)

    with ThreadPoolExecutor(max_workers=min(_COPY_CONCURRENCY, len(starts))) as pool:
        return list(pool.map(copy, range(1, len(starts) + 1)))

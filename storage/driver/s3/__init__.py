"""The S3 driver (boto3): keys are objects in one bucket, below an optional key prefix.

Works with AWS S3 and S3-compatible servers (MinIO, Ceph RGW, SeaweedFS). Choices that matter:
- `put` is one PutObject and `move` a server-side copy (CopyObject, or UploadPartCopy ranges for
  objects over `multipart_copy_threshold`, required above 5 GiB) then a delete: both atomic for
  readers. Nothing streams through this process except what the caller reads or writes.
- The appending writer is resumable from any process; its memory is one part, never copied (the
  tail it continues from is taken over, the one it leaves is handed over: see writer). Its hidden
  sidecar objects (`.cargobay-upload-<name>`) stand for their key in `list`, `walk` and `stat`,
  so an upload in progress looks the same as on the filesystem driver; or its caller keeps that
  state (`saved`, `external_writer_state`: the registry's uploads do) and there is no sidecar.
- Throttling, 5xx and connection errors are retried by botocore (`retry_mode`, `max_attempts`); a
  streaming read that breaks resumes with a Range request. What still fails becomes
  StorageUnavailable, so the registry answers 503 and recovers by itself when S3 returns.

Modules, each depending only on those above it (boto3 is imported only in this package):
- `options`: S3Options, every setting with its default and limits (no boto3: importable without
  the S3 extra, as `storage` does for everyone);
- `bucket`: S3Bucket, the client, key mapping, calls with error translation, listing pages;
- `reader`: streaming reads that resume; `multipart`: upload lifecycle and server-side copy;
- `sidecar`: the saved state of an upload in progress; `writer`: the appending writer;
- `hygiene`: debris killed writers leave; `driver`: S3Driver, the protocol over all of them.

`S3Driver` is imported on first use, so that `S3Options` stays usable without boto3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .options import S3Options

if TYPE_CHECKING:
    from .driver import S3Driver

__all__ = ["S3Driver", "S3Options"]


def __getattr__(name: str) -> Any:
    if name == "S3Driver":
        from .driver import S3Driver

        return S3Driver
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

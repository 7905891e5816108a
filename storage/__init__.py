"""Where bytes live and when they become visible: storage drivers (fs, s3) and the
content-addressed stores above them. Imports only `ocispec` (and boto3 in the s3 driver).

This module is the front door: the registry imports storage only from here (`from storage import
Storage`), never a submodule, so what it may rely on is this list (tests/test_architecture.py
checks it). The exceptions are exported by class name (the registry's one table from storage
exceptions to OCI codes imports them so); `errors`, the module holding them all, is exported too.
"""

from . import errors
from .blobs import BlobInfo, RepositoryBlobs
from .check import CheckReport, Finding, scrub
from .driver.base import DriverCapabilities, FileInfo, FileWriter, StorageDriver
from .driver.factory import DriverOptions, driver_options, open_driver
from .driver.fs import FilesystemOptions
from .driver.observed import DriverObserver, ObservedDriver
from .driver.options import option_limits
from .driver.s3.options import S3Options
from .errors import (
    BlobUnknown,
    CorruptLink,
    DigestInvalid,
    InvalidKey,
    InvalidOffset,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameUnknown,
    ObjectBusy,
    PathNotFound,
    SizeInvalid,
    StorageConfigError,
    StorageError,
    StorageUnavailable,
    TagUnknown,
    UploadInvalid,
    UploadRangeInvalid,
    UploadUnknown,
)
from .fill import BlobFill
from .gc import GcProgress, GcReport, collect
from .journal import Journal, JournalBatch, open_journal
from .link_board import LinkBoard
from .manifests import CACHED_MANIFEST_RULES, ManifestRules, PutResult, StoredManifest
from .marking import ExpiringRepositories
from .queue import Queue, QueueItem, open_queue
from .recent_links import remembers_links
from .repository import Repository, Storage, open_storage
from .tags import TagInfo
from .upload_session import UploadSession
from .uploads import RepositoryUploads, UploadStatus
from .usage import RebuildReport, RuleUsage, UsageIndex, UsageRule, track

__all__ = [
    "CACHED_MANIFEST_RULES",
    "BlobFill",
    "BlobInfo",
    "BlobUnknown",
    "CheckReport",
    "CorruptLink",
    "DigestInvalid",
    "DriverCapabilities",
    "DriverObserver",
    "DriverOptions",
    "ExpiringRepositories",
    "FileInfo",
    "FileWriter",
    "FilesystemOptions",
    "Finding",
    "GcProgress",
    "GcReport",
    "InvalidKey",
    "InvalidOffset",
    "Journal",
    "JournalBatch",
    "LinkBoard",
    "ManifestBlobUnknown",
    "ManifestInvalid",
    "ManifestRules",
    "ManifestUnknown",
    "NameUnknown",
    "ObjectBusy",
    "ObservedDriver",
    "PathNotFound",
    "PutResult",
    "Queue",
    "QueueItem",
    "RebuildReport",
    "Repository",
    "RepositoryBlobs",
    "RepositoryUploads",
    "RuleUsage",
    "S3Options",
    "SizeInvalid",
    "Storage",
    "StorageConfigError",
    "StorageDriver",
    "StorageError",
    "StorageUnavailable",
    "StoredManifest",
    "TagInfo",
    "TagUnknown",
    "UploadInvalid",
    "UploadRangeInvalid",
    "UploadSession",
    "UploadStatus",
    "UploadUnknown",
    "UsageIndex",
    "UsageRule",
    "collect",
    "driver_options",
    "errors",
    "open_driver",
    "open_journal",
    "open_queue",
    "open_storage",
    "option_limits",
    "remembers_links",
    "scrub",
    "track",
]

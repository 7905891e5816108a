"""The local content store: an OCI image layout (`layout`: blobs, the image index, records) and
safe writes into it (`ingest`: atomic small writes, flock helpers, resumable verified downloads).
Other puller modules import it only from here."""

from .ingest import Ingest, atomic_write, flock, fsync_dir
from .layout import ImageRecord, ImageSummary, Store

__all__ = ["ImageRecord", "ImageSummary", "Ingest", "Store", "atomic_write", "flock", "fsync_dir"]

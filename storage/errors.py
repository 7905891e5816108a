"""The storage package's exceptions. Every one derives from StorageError; the registry maps each
class to an OCI error in one table (registry/errors.py)."""

from __future__ import annotations


class StorageError(Exception):
    """Base of every storage failure. `message` is safe to show to a client."""

    def __init__(self, message: str, **detail: object) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


# --- driver level -------------------------------------------------------------------------------
class PathNotFound(StorageError):
    """No object (or prefix) at this key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"path not found: {key}", key=key)
        self.key = key


class InvalidOffset(StorageError):
    """A read or append at an offset the object does not have."""


class InvalidKey(StorageError):
    """A key that is malformed or would leave the storage root. Keys come from storage.paths only,
    so this signals a bug or an attack that got past name validation."""


class ObjectBusy(StorageError):
    """The object is being written by another request; try again once it is done."""


class StorageUnavailable(StorageError):
    """The backend did not answer (after retries); the request may succeed later."""


class CorruptLink(StorageError):
    """A link object whose content is no digest (written by something else, or damaged)."""


class CorruptState(StorageError):
    """An appending writer's saved state that cannot be read (damaged, or written by a version
    that encodes it otherwise): what it names cannot be continued."""


class StorageConfigError(StorageError):
    """The driver's configuration is wrong (bucket missing, bad credentials, root not writable)."""


# --- content level ------------------------------------------------------------------------------
class BlobUnknown(StorageError):
    pass


class UploadUnknown(StorageError):
    pass


class UploadInvalid(StorageError):
    """An upload request that does not fit the upload's state (e.g. a chunk at the wrong offset)."""


class UploadRangeInvalid(UploadInvalid):
    """A chunk whose Content-Range does not start where the upload ends."""

    def __init__(self, message: str, current_size: int) -> None:
        super().__init__(message, current_size=current_size)
        self.current_size = current_size


class DigestInvalid(StorageError):
    """Content whose digest (or size) is not the one claimed; nothing was stored."""


class SizeInvalid(StorageError):
    pass


class ManifestUnknown(StorageError):
    pass


class ManifestInvalid(StorageError):
    pass


class ManifestBlobUnknown(StorageError):
    """A manifest references a blob or manifest this repository does not have."""


class NameUnknown(StorageError):
    pass


class TagUnknown(ManifestUnknown):
    pass

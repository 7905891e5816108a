"""The registry's exceptions form one family (registry/errors.py says which does what), and every
storage exception is answered by the one table, never by a handler re-mapping it."""

from __future__ import annotations

import errno
import importlib
import inspect
import logging
import pkgutil

import pytest

import registry
import storage.errors as se
from ocispec.errors import ErrorCode
from registry.errors import STORAGE_ERRORS, RegistryBaseError, RegistryError, to_registry_error


def registry_modules() -> list[str]:
    return [info.name for info in pkgutil.walk_packages(registry.__path__, "registry.")]


def test_every_exception_the_registry_defines_derives_from_one_base() -> None:
    defined = []
    for name in registry_modules():
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == name and issubclass(cls, BaseException):
                defined.append(cls)
    assert len(defined) >= 10  # the walk found them (errors, settings, auth)
    outside = [f"{cls.__module__}.{cls.__qualname__}" for cls in defined if not issubclass(cls, RegistryBaseError)]
    assert not outside


@pytest.mark.parametrize("exc,code,status", [
    (se.BlobUnknown("blob unknown"), "BLOB_UNKNOWN", 404),
    (se.UploadUnknown("no such upload"), "BLOB_UPLOAD_UNKNOWN", 404),
    (se.UploadInvalid("bad upload"), "BLOB_UPLOAD_INVALID", 400),
    (se.UploadRangeInvalid("chunk at 20, upload at 10", current_size=10), "RANGE_INVALID", 416),
    (se.DigestInvalid("wrong digest"), "DIGEST_INVALID", 400),
    (se.SizeInvalid("wrong size"), "SIZE_INVALID", 400),
    (se.ManifestBlobUnknown("no blob"), "MANIFEST_BLOB_UNKNOWN", 400),
    (se.ManifestInvalid("bad manifest"), "MANIFEST_INVALID", 400),
    (se.TagUnknown("no tag"), "MANIFEST_UNKNOWN", 404),
    (se.NameUnknown("no repo"), "NAME_UNKNOWN", 404),
    (se.InvalidKey("bad key"), "NAME_INVALID", 400),
    (se.StorageUnavailable("down"), "UNAVAILABLE", 503),
], ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value))
def test_storage_errors_become_their_oci_answer_with_the_storage_message(exc: se.StorageError, code: str,
                                                                         status: int) -> None:
    error = to_registry_error(exc)
    assert (error.code.wire, error.status, error.message) == (code, status, exc.message)


def test_a_refused_chunk_answer_carries_the_upload_state_from_the_table() -> None:
    answers = {answer.error: answer for answer in STORAGE_ERRORS}
    assert answers[se.UploadRangeInvalid].status == 416
    exc = se.UploadRangeInvalid("chunk at 20, upload at 10", current_size=10)
    error = to_registry_error(exc, {"name": "team/app", "upload_id": "u-1"})
    assert (error.code, error.status) == (ErrorCode.RANGE_INVALID, 416)
    assert error.headers == {"Location": "/v2/team/app/blobs/uploads/u-1", "Docker-Upload-UUID": "u-1",
                             "Range": "0-9"}
    assert to_registry_error(se.UploadRangeInvalid("empty upload", current_size=0)).headers == {"Range": "0-0"}


def test_unknown_failures_are_a_500_that_says_nothing_of_the_cause() -> None:
    for exc in (RuntimeError("secret path /etc/x"), se.CorruptLink("link at v1/x is damaged")):
        error = to_registry_error(exc)
        assert isinstance(error, RegistryError) and error.status == 500
        assert "/etc/x" not in error.message and "v1/x" not in error.message


@pytest.mark.parametrize("number", [errno.ENOSPC, errno.EDQUOT], ids=["ENOSPC", "EDQUOT"])
def test_a_full_disk_is_a_507_told_in_one_line_without_a_traceback(number: int,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """A push that meets a full disk is told so (507, the OCI error JSON), and the log says it in
    one line for whoever frees space: not an internal error with a traceback."""
    with caplog.at_level(logging.ERROR, logger="cargobay"):
        error = to_registry_error(OSError(number, "No space left on device", "/srv/registry/v1/blobs/x"))
    assert (error.code, error.status, error.message) == (ErrorCode.UNAVAILABLE, 507, "the registry's storage is full")
    assert [(r.getMessage(), r.exc_info) for r in caplog.records] == [
        ("storage full: No space left on device (/srv/registry/v1/blobs/x)", None)]
    other = to_registry_error(OSError(errno.EACCES, "Permission denied"))
    assert other.status == 500  # every other OSError is still a fault to look into

"""`ObservedDriver`: a driver that tells an observer about each call (what the registry's metrics
time) while answering exactly as the driver it wraps, on every driver; and the S3 driver's retries,
told as botocore makes them."""

from __future__ import annotations

import pytest

from storage import ObservedDriver, PathNotFound, Storage, StorageUnavailable
from storage.driver.base import StorageDriver
from storage.driver.s3 import S3Driver
from tests.support.s3servers import require_module
from tests.support.servers import free_port


class Calls:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []
        self.retries: list[str] = []

    def succeeded(self, operation: str, seconds: float) -> None:
        assert seconds >= 0
        self.calls.append((operation, None))

    def failed(self, operation: str, seconds: float, error: BaseException) -> None:
        assert seconds >= 0
        self.calls.append((operation, type(error).__name__))

    def retried(self, operation: str) -> None:
        self.retries.append(operation)


def test_every_call_is_told_and_answered_as_the_driver_answers(driver: StorageDriver) -> None:
    calls = Calls()
    observed = ObservedDriver(driver, calls)
    assert (observed.name, observed.capabilities) == (driver.name, driver.capabilities)

    observed.put("a/one", b"1")
    assert observed.get("a/one") == b"1"
    with pytest.raises(PathNotFound):
        observed.stat("a/missing")
    writer = observed.writer("a/two")
    writer.write(b"22")
    writer.commit()
    assert sorted(info.key for info in observed.walk("a")) == ["a/one", "a/two"]
    with observed.reader("a/two", 1) as stream:
        assert stream.read() == b"2"
    observed.delete_many(["a/one", "a/two"])
    assert calls.calls == [("put", None), ("get", None), ("stat", "PathNotFound"), ("writer", None),
                           ("writer.commit", None), ("walk", None), ("reader", None), ("delete_many", None)]

    # A whole store over it works as over the driver itself.
    storage = Storage(observed)
    storage.record_run("gc", {"blobs_removed": 3})
    assert (storage.last_run("gc") or {}).get("blobs_removed") == 3


def test_s3_retries_are_told_by_operation() -> None:
    require_module("boto3")
    calls = Calls()
    # Nothing listens on the port: every attempt fails to connect, and botocore retries each.
    s3 = S3Driver(bucket="nowhere", endpoint_url=f"http://127.0.0.1:{free_port()}", region="us-east-1",
                  access_key="k", secret_key="s", max_attempts=2, retry_mode="standard", connect_timeout=1)
    observed = ObservedDriver(s3, calls)
    with pytest.raises(StorageUnavailable):
        observed.get("x")
    assert calls.retries == ["GetObject"]
    assert calls.calls == [("get", "StorageUnavailable")]

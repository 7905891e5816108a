"""The storage metrics: the DriverObserver (storage.ObservedDriver) that turns every driver call into
`cargobay_storage_operation_duration_seconds`, failures into `cargobay_storage_errors_total` and the
driver's retries (S3: botocore's) into `cargobay_storage_retries_total`.

`instrument(driver)` wraps the driver the registry opens; storage itself knows nothing of metrics.
Calls run in storage threads, and on the event loop for the small reads a local disk answers at
once, so `called` only adds to a `Tally` (registry.metrics.tally); the durations reach the
histogram at the next flush. Failures and retries are rare: they are counted at once.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Histogram

from storage import ObservedDriver, PathNotFound, StorageDriver

from .families import STORAGE_BUCKETS, STORAGE_DURATION, STORAGE_ERRORS, STORAGE_RETRIES
from .tally import Tally, observe_many


class StorageMetrics:
    """A DriverObserver for the driver named `driver` (`filesystem`, `s3`)."""

    def __init__(self, driver: str) -> None:
        self.driver = driver
        self._durations: dict[str, Histogram] = {}
        self._errors: dict[tuple[str, str], Counter] = {}
        self._retries: dict[str, Counter] = {}
        #: Per operation: the seconds of its calls, and their buckets.
        self._tally: Tally[str] = Tally(STORAGE_BUCKETS, self._apply)
        # Every call that returned: straight into the tally (one call less on the hot path).
        self.succeeded: Callable[[str, float], None] = self._tally.observe

    def failed(self, operation: str, seconds: float, error: BaseException) -> None:
        self._tally.observe(operation, seconds)
        if not isinstance(error, PathNotFound):  # "not there" is an answer
            self._failed(operation, type(error).__name__)

    def _apply(self, operation: str, seconds: float, _first: float, _second: float, buckets: list[int]) -> None:
        duration = self._durations.get(operation)
        if duration is None:
            duration = self._durations[operation] = STORAGE_DURATION.labels(self.driver, operation)
        observe_many(duration, seconds, buckets)

    def _failed(self, operation: str, error: str) -> None:
        counter = self._errors.get((operation, error))
        if counter is None:
            counter = self._errors[(operation, error)] = STORAGE_ERRORS.labels(self.driver, operation, error)
        counter.inc()

    def retried(self, operation: str) -> None:
        counter = self._retries.get(operation)
        if counter is None:
            counter = self._retries[operation] = STORAGE_RETRIES.labels(self.driver, operation)
        counter.inc()


def instrument(driver: StorageDriver) -> StorageDriver:
    """`driver`, with its calls timed and counted."""
    return ObservedDriver(driver, StorageMetrics(driver.name))

"""The storage suite's fixtures. Every test that takes `driver` runs on each driver:

- `fs`: FilesystemDriver on a fresh temp dir;
- `s3-moto`: S3Driver against a moto server process over HTTP, a fresh bucket per test, no prefix;
- `s3-seaweedfs`: S3Driver against `weed mini` (checks signatures), one bucket, a fresh key prefix
  per test (so the prefix option is exercised too).

The servers are session-scoped and started only when an s3 test runs. S3 drivers use the smallest
part size (5 MiB) and a small multipart-copy threshold so that tests of a few MiB exercise
multipart uploads and copies, and a list page size of 3 so that every listing paginates.

`driver_replica` is a second driver instance over the same store (for S3 a separate client), to
model another registry replica; `store_factory` builds more, with option overrides.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from storage.driver.base import StorageDriver
from storage.driver.fs import FilesystemDriver
from tests.support.s3servers import S3Server, serving, start_moto, start_seaweedfs

MiB = 1024 * 1024

# Small sizes so multipart paths run in tests of a few MiB; page size 3 so listings paginate.
S3_TEST_OPTIONS: dict[str, Any] = {
    "part_size": 5 * MiB,
    "multipart_copy_threshold": 6 * MiB,
    "multipart_copy_part_size": 5 * MiB,
    "page_size": 3,
    "max_attempts": 3,
}

DRIVER_KINDS = ["fs", "s3-moto", "s3-seaweedfs"]

StoreFactory = Callable[..., StorageDriver]
_STORE = pytest.StashKey["StoreFactory"]()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    yield from serving(start_moto(tmp_path_factory.mktemp("moto")))


@pytest.fixture(scope="session")
def seaweedfs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    yield from serving(start_seaweedfs(tmp_path_factory.mktemp("seaweedfs")))


@pytest.fixture(scope="session")
def seaweedfs_bucket(seaweedfs_server: S3Server) -> str:
    return seaweedfs_server.create_bucket()


def _store_factory(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> StoreFactory:
    """A function building driver instances over one fresh, empty store of `kind`."""
    if kind == "fs":
        root = tmp_path / "store"

        def make_fs(**overrides: Any) -> StorageDriver:
            return FilesystemDriver(overrides.get("root", root))

        return make_fs

    from storage.driver.s3 import S3Driver

    if kind == "s3-moto":
        server: S3Server = request.getfixturevalue("moto_server")
        base = server.driver_options(server.create_bucket(), **S3_TEST_OPTIONS)
    elif kind == "s3-seaweedfs":
        server = request.getfixturevalue("seaweedfs_server")
        bucket = request.getfixturevalue("seaweedfs_bucket")
        base = server.driver_options(bucket, prefix=f"t-{uuid.uuid4().hex[:12]}/store", **S3_TEST_OPTIONS)
    else:
        raise ValueError(kind)

    def make_s3(**overrides: Any) -> StorageDriver:
        return S3Driver(**{**base, **overrides})

    return make_s3


@pytest.fixture(params=DRIVER_KINDS)
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> StorageDriver:
    """A fresh, empty store on each driver kind (see the module docstring)."""
    factory = _store_factory(request, request.param, tmp_path)
    request.node.stash[_STORE] = factory
    return factory()


@pytest.fixture
def store_factory(driver: StorageDriver, request: pytest.FixtureRequest) -> StoreFactory:
    """Builds further drivers over the same store as `driver`; S3 option overrides are passed on
    (e.g. `store_factory(redirect=True)`); the fs factory ignores them."""
    return request.node.stash[_STORE]


@pytest.fixture
def driver_replica(store_factory: StoreFactory) -> StorageDriver:
    """Another driver instance over the same store as `driver`, as another replica would have."""
    return store_factory()


@pytest.fixture
def driver_kind(driver: StorageDriver, request: pytest.FixtureRequest) -> str:
    """`fs`, `s3-moto` or `s3-seaweedfs`: for the few tests that check driver-specific extras."""
    return str(request.node.callspec.params["driver"])

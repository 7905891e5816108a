"""The listing index (storage.listing) on every driver: pages in the tree's order, kept exact by
pushes and deletes from several replicas, rebuilt from a tree that has none."""

from __future__ import annotations

import threading

import pytest

from ocispec.digest import Digest
from storage import index_keys, paths
from storage.driver.base import StorageDriver
from storage.errors import NameUnknown
from storage.gc import collect
from storage.marking import ExpiringRepositories
from storage.repository import Storage
from tests.support.images import Image, simple_image

from .test_stores import push_image

# Names whose order trips up naive encodings: `/` against `-` and `.`, prefixes of each other,
# nesting, lengths around the chunk size.
NAMES = ["a", "a-b", "a.b", "a/b", "a/b/c", "a0", "ab", "abc", "abcd", "abc/d", "b", "b__c/x", "team/app",
         "team/app-1", "team/app/nested", "team-x/app", "z9"]
TAGS = ["1", "1.0", "1.0-rc", "1.0.1", "10", "A", "Latest", "_x", "a", "a-b", "a..b", "a.b", "ab", "abc",
        "abcd", "latest", "v1", "v1.2.3-alpine", "z" * 20]


def pages(read, size: int) -> list[str]:  # type: ignore[no-untyped-def]
    """Every entry, read `size` at a time as a client follows `Link` headers."""
    seen: list[str] = []
    last = None
    while True:
        page, more = read(last, size)
        assert len(page) <= size
        seen += page
        if not more:
            return seen
        assert page
        last = page[-1]


def push_into(storage: Storage, seed: str, image: Image, name: str, tags: tuple[str, ...] = ()) -> Digest:
    """`image` in `name` by mounting its blobs from `seed` (cheaper than uploading them again)."""
    repo = storage.repository(name)
    for blob in image.blobs():
        repo.blobs.mount_from(storage.repository(seed).blobs, Digest.parse(blob.digest))
    return repo.manifests.put(image.manifest, image.media_type, tags=tags).digest


def test_pages_follow_the_tree_in_order_and_after_any_last(driver: StorageDriver) -> None:
    storage = Storage(driver)
    image = simple_image("listing", layer_count=1)
    push_image(storage, NAMES[0], image, TAGS[0])
    for name in NAMES[1:]:
        push_into(storage, NAMES[0], image, name)
    storage.repository("only/blobs").blobs.mount_from(storage.repository("a").blobs, Digest.parse(image.config.digest))
    repo = storage.repository("team/app")
    digest = Digest.parse(image.digest)
    for tag in reversed(TAGS):
        repo.tags.set(tag, digest)
    storage.listing_ready()

    assert storage.repositories() == sorted(NAMES)  # the tree's answer, as before
    assert repo.tags.list() == sorted(TAGS)
    for size in (1, 4, 1000):
        assert pages(storage.repositories_page, size) == sorted(NAMES)
        assert pages(repo.tags.page, size) == sorted(TAGS)
    # `last` may be any string, as the API's is: the page starts after it.
    for last in ("a/", "a.", "a/b/", "ab", "team/", "Z", "~", "a!", "a.b\u00e9", "0"):
        assert storage.repositories_page(last, 1000)[0] == [n for n in sorted(NAMES) if n > last]
        assert repo.tags.page(last, 1000)[0] == [t for t in sorted(TAGS) if t > last]
    assert storage.repositories_page(None, 0) == ([], True)
    assert storage.repositories_page("zz", 5) == ([], False)
    assert storage.repository("a/b").tags.page(None, 10) == ([], False)  # a repository without tags
    with pytest.raises(NameUnknown):
        storage.repository("only/blobs").tags.page(None, 10)
    assert storage.index_differences() == []


def test_pushes_and_deletes_keep_it_exact(driver: StorageDriver, driver_replica: StorageDriver) -> None:
    storage, replica = Storage(driver), Storage(driver_replica)
    storage.listing_ready()
    one, two = simple_image("exact-1", layer_count=1), simple_image("exact-2", layer_count=1)
    first = push_image(storage, "e/app", one, "v1")
    assert replica.repositories_page(None, 10) == (["e/app"], False)  # the next request, any replica
    second = push_image(replica, "e/app", two, "v2")
    repo, other = storage.repository("e/app"), replica.repository("e/app")
    repo.tags.set("same", first)
    repo.tags.set("elsewhere", Digest.of(b"a manifest of another repository"))  # does not resolve: not listed
    assert other.tags.page(None, 10) == (["same", "v1", "v2"], False)

    other.tags.delete("same")
    assert repo.tags.page(None, 10) == (["v1", "v2"], False)
    repo.manifests.delete(first)  # its tag goes with it; the repository stays (it has another)
    assert other.tags.page(None, 10) == (["v2"], False)
    assert replica.repositories_page(None, 10) == (["e/app"], False)
    other.manifests.delete(second)  # the last manifest: the repository leaves the catalog
    assert storage.repositories_page(None, 10) == ([], False)
    try:  # as the tree says: NameUnknown on S3, no tags on disk (where empty directories stay)
        assert repo.tags.list() == [] and repo.tags.page(None, 10) == ([], False)
    except NameUnknown:
        with pytest.raises(NameUnknown):
            repo.tags.page(None, 10)
    assert storage.index_differences() == []

    # The pull-through cache's expiry in garbage collection drops revisions through the same path,
    # also one whose bytes are gone (it cannot be read to find its tags the usual way).
    push_image(storage, "up.test/lib/app", one, "latest")
    push_image(storage, "up.test/lib/app", two, "two")
    driver.delete(paths.blob_dir(second))
    collect(storage, grace_seconds=0, expiring=ExpiringRepositories(("up.test/",), keep_for=10),
            now=driver.stat(paths.manifest_revision_link("up.test/lib/app", first)).modified + 60)
    assert storage.repositories_page(None, 10) == ([], False)
    assert storage.index_differences() == []


def test_rebuilt_from_a_tree_without_an_index(driver: StorageDriver) -> None:
    storage = Storage(driver)
    image = simple_image("rebuild", layer_count=1)
    push_image(storage, "r/one", image, "v1")
    push_into(storage, "r/one", image, "r/two", ("a", "b"))
    # A tag that does not resolve (its manifest is not in that repository) is no entry.
    driver.put(paths.tag_current_link("r/two", "dangling"), b"sha256:" + b"0" * 64)
    driver.delete(index_keys.INDEX)  # a store written before the index existed
    driver.put(index_keys.index_tag("r/two", "gone"), b"")  # and a marker nothing in the tree justifies

    found = {str(d) for d in storage.index_differences()}
    assert found == {"the listing index misses repository r/one", "the listing index misses repository r/two",
                     "the listing index misses tag r/one:v1", "the listing index misses tag r/two:a",
                     "the listing index misses tag r/two:b",
                     "the listing index names tag r/two:gone, which the tree does not have"}
    fresh = Storage(driver)
    fresh.listing_ready()  # the first listing of an unbuilt store builds it
    assert fresh.repositories_page(None, 10) == (["r/one", "r/two"], False)
    assert fresh.repository("r/two").tags.page(None, 10) == (["a", "b"], False)
    assert fresh.index_differences() == []
    assert fresh.rebuild_index().added == 0


def test_concurrent_writers_on_two_replicas(driver: StorageDriver, driver_replica: StorageDriver) -> None:
    storage, replica = Storage(driver), Storage(driver_replica)
    storage.listing_ready()
    images = {"p": simple_image("concurrent-p", layer_count=1), "q": simple_image("concurrent-q", layer_count=1)}
    for image in images.values():
        push_image(storage, "c/seed", image)
    errors: list[BaseException] = []

    def churn(store: Storage, own: str) -> None:
        # Both replicas write the same repository's directories and markers at once: its first
        # manifests, tags set and deleted.
        try:
            push_into(store, "c/seed", images[own], "c/app", (f"{own}-first",))
            tags = store.repository("c/app").tags
            for i in range(6):
                tags.set(f"{own}{i}", Digest.parse(images[own].digest))
                if i % 2:
                    tags.discard(f"{own}{i - 1}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(store, own)) for store, own in ((storage, "p"), (replica, "q"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    tags = replica.repository("c/app").tags
    listed = pages(tags.page, 3)
    assert listed == ["p-first", "p1", "p3", "p5", "q-first", "q1", "q3", "q5"]
    assert listed == tags.list()  # the index says what the tree says
    assert storage.repositories_page(None, 10) == (["c/app", "c/seed"], False)
    assert storage.index_differences() == []

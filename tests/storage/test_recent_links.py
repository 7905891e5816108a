"""What serving may believe about links (storage.recent_links, `storage.link_cache_seconds`): on S3 a
replica serves a blob or manifest it saw linked lately without asking again, for at most the cache
time after the look that found the link (however soon another replica deleted it); its own deletes
are seen at once; a blob HEAD (`stat`) and a push's checks always look. On disk every read looks."""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ocispec import mediatypes as mt
from ocispec.digest import Digest
from storage import BlobUnknown, LinkBoard, ManifestBlobUnknown, ManifestUnknown, Repository, Storage, paths
from storage.driver.base import StorageDriver
from storage.recent_links import RecentLinks

from .test_stores import push_blob

TTL = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def layer_link(name: str, hex_: str = "a" * 64) -> str:
    return paths.layer_link(name, Digest.parse(f"sha256:{hex_}"))


# -- the memory itself -----------------------------------------------------------------------------
def test_a_link_seen_is_believed_for_the_cache_time_and_looked_at_again_after() -> None:
    clock = Clock()
    recent = RecentLinks(TTL, clock=clock)
    looks: list[str] = []

    def look(answer: bool) -> Callable[[], bool]:
        return lambda: looks.append("look") or answer

    key = layer_link("memo/a")
    assert recent.present(key, look(True))
    clock.now += TTL - 1
    assert recent.present(key, look(False))  # believed: not looked at
    assert looks == ["look"]
    clock.now += 2
    assert not recent.present(key, look(False))  # too old: looked at, and it is gone
    assert not recent.present(key, look(False))  # a no is never remembered
    assert looks == ["look"] * 3


def test_a_delete_forgets_what_it_may_have_removed_and_nothing_else() -> None:
    recent = RecentLinks(TTL, clock=Clock())
    keys = {name: layer_link(name) for name in ("memo/a", "memo/a/nested", "memo/b")}
    for key in keys.values():
        recent.written(key, lambda: None)

    def believed() -> set[str]:
        return {name for name, key in keys.items() if recent.present(key, lambda: False)}

    recent.forget_deleted(paths.upload_data("memo/a", "0123456789abcdef"))  # uploads hold no links
    recent.forget_deleted(paths.blob_dir(Digest.parse(f"sha256:{'a' * 64}")))  # the CAS: none either
    assert believed() == set(keys)
    recent.forget_deleted(paths.layer("memo/a", Digest.parse(f"sha256:{'b' * 64}")))  # any link of memo/a
    assert believed() == {"memo/a/nested", "memo/b"}
    recent.written(keys["memo/a"], lambda: None)
    recent.forget_deleted(paths.repository("memo/a"))  # the repository and those below it (or more)
    assert not believed() & {"memo/a", "memo/a/nested"}
    for key in keys.values():
        recent.written(key, lambda: None)
    recent.forget_deleted(paths.REPOSITORIES)  # everything
    assert believed() == set()


def test_what_was_seen_while_a_delete_ran_is_not_remembered() -> None:
    recent = RecentLinks(TTL, clock=Clock())
    key = layer_link("memo/race")

    def look_while_deleted() -> bool:
        recent.forget_deleted(key)  # another thread's delete, between the look and its answer
        return True

    assert recent.present(key, look_while_deleted)
    assert not recent.present(key, lambda: False)
    recent.written(key, lambda: recent.forget_deleted(key))
    assert not recent.present(key, lambda: False)


def test_a_cache_time_of_zero_looks_every_time() -> None:
    recent = RecentLinks(0.0)
    looks: list[bool] = []
    key = layer_link("memo/zero")
    recent.written(key, lambda: None)
    for _ in range(2):
        assert recent.present(key, lambda: looks.append(True) or True)
    assert len(looks) == 2


# -- replicas over one store -------------------------------------------------------------------
def manifest_naming(config: Digest, config_size: int) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                       "config": {"mediaType": mt.OCI_CONFIG, "digest": str(config), "size": config_size},
                       "layers": []}).encode()


def test_a_replica_serves_what_another_unlinked_for_at_most_the_cache_time(
        driver: StorageDriver, driver_replica: StorageDriver) -> None:
    clock = Clock()
    serving = Storage(driver, link_cache_seconds=TTL, clock=clock)
    other = Storage(driver_replica)
    remembers = not driver.capabilities.fast_small_reads  # S3: a link check is a round trip
    data = b"a config the other replica unlinks"
    digest = push_blob(serving, "memo/repo", data)
    raw = manifest_naming(digest, len(data))
    manifest = serving.repository("memo/repo").manifests.put(raw, mt.OCI_MANIFEST).digest
    repo = serving.repository("memo/repo")
    with repo.blobs.open(digest) as stream:
        assert stream.read() == data
    assert repo.manifests.get(manifest).raw == raw

    other.repository("memo/repo").blobs.unlink(digest)
    other.repository("memo/repo").manifests.withdraw(manifest)
    clock.now += TTL - 1
    if remembers:
        with repo.blobs.open(digest) as stream:
            assert stream.read() == data
        assert repo.blobs.stat_served(digest).size == len(data)
        assert repo.manifests.get(manifest).raw == raw
    else:
        assert_unknown(repo, digest, manifest)
    # A HEAD (how a push client decides to upload) and a push look at the links themselves.
    with pytest.raises(BlobUnknown):
        repo.blobs.stat(digest)
    with pytest.raises(ManifestBlobUnknown):
        repo.manifests.put(manifest_naming(digest, len(data)).replace(b"}", b', "annotations": {}}', 1),
                           mt.OCI_MANIFEST)
    assert not repo.blobs.has(digest)
    clock.now += 2
    assert_unknown(repo, digest, manifest)


def assert_unknown(repo: Repository, blob: Digest, manifest: Digest) -> None:
    """Every read that serves refuses the blob and the manifest."""
    for read in (repo.blobs.open, repo.blobs.stat_served):
        with pytest.raises(BlobUnknown):
            read(blob)
    with pytest.raises(ManifestUnknown):
        repo.manifests.get(manifest)


def test_a_replica_sees_its_own_deletes_at_once(driver: StorageDriver) -> None:
    storage = Storage(driver, link_cache_seconds=TTL, clock=Clock())
    data = b"a blob and a manifest deleted through the replica that served them"
    digest = push_blob(storage, "memo/own", data)
    repo = storage.repository("memo/own")
    manifest = repo.manifests.put(manifest_naming(digest, len(data)), mt.OCI_MANIFEST, tags=("v1",)).digest
    assert repo.blobs.stat_served(digest).size == len(data)
    assert repo.manifests.get_tagged("v1").digest == manifest
    repo.manifests.delete(manifest)
    with pytest.raises(ManifestUnknown):
        repo.manifests.get(manifest)
    repo.blobs.unlink(digest)
    with pytest.raises(BlobUnknown):
        repo.blobs.open(digest)
    # Linked again: served again.
    repo.blobs.link(digest)
    with repo.blobs.open(digest) as stream:
        assert stream.read() == data


def test_processes_sharing_a_board_believe_what_one_saw_and_forget_what_one_deleted(tmp_path: Path) -> None:
    board_file = tmp_path / "board"
    LinkBoard.create(board_file)
    # Two workers of one server: each maps the file itself.
    first, second = (RecentLinks(TTL, clock=Clock(), board=LinkBoard.attach(board_file)) for _ in range(2))
    keys = [layer_link("memo/shared"), layer_link("memo/shared/nested"), layer_link("memo/apart")]
    for key in keys:
        first.written(key, lambda: None)
    assert all(second.present(key, lambda: False) for key in keys)  # seen by the other: believed
    other = RecentLinks(TTL, clock=Clock(), board=LinkBoard.private())  # another server: its own board
    assert not other.present(keys[0], lambda: False)
    first.forget_deleted(paths.layer("memo/shared", Digest.parse(f"sha256:{'c' * 64}")))
    assert [second.present(key, lambda: False) for key in keys] == [False, True, True]
    first.forget_deleted(paths.repository("memo"))  # a prefix: every repository below it
    assert [second.present(key, lambda: False) for key in keys] == [False, False, False]


def _delete_many_times(board_file: str, times: int, start: Any) -> None:
    board = LinkBoard.attach(Path(board_file))
    start.wait()  # both at once
    for _ in range(times):
        board.moved("memo/busy")


def test_deletes_in_several_processes_at_once_only_ever_move_a_counter_up(tmp_path: Path) -> None:
    """A mark a sighting carries must never come back: every delete of every worker counts."""
    board_file = tmp_path / "board"
    board = LinkBoard.create(board_file)
    before = board.mark("memo/busy")
    times = 20_000
    context = multiprocessing.get_context("spawn")  # as uvicorn starts its workers
    start = context.Barrier(2)
    workers = [context.Process(target=_delete_many_times, args=(str(board_file), times, start)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    assert board.mark("memo/busy") == (before[0], before[1] + 2 * times)


def test_a_sighting_is_believed_only_for_its_own_key() -> None:
    board = LinkBoard.private()
    key, other = layer_link("memo/own"), layer_link("memo/own", "b" * 64)
    board.saw(key, 1000.0, board.mark("memo/own"))
    assert board.believes(key, "memo/own", 1001.0, TTL)
    assert not board.believes(other, "memo/own", 1001.0, TTL)  # whatever slot it hashes to
    assert not board.believes(key, "memo/own", 1000.0 + TTL, TTL)
    board.moved("memo/own")
    assert not board.believes(key, "memo/own", 1001.0, TTL)

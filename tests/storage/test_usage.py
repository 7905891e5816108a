"""Quota usage kept in storage (storage.usage) on every driver: unique blobs per rule, current as
uploads, mounts, unlinks and garbage collection change links, the same from another replica, and
rebuilt from the tree."""

from __future__ import annotations

import os

from ocispec.digest import Digest
from storage import Storage, UsageRule, track
from storage.driver.base import StorageDriver
from storage.gc import collect
from tests.support.images import simple_image

from .test_stores import push_blob, push_image

TEAM_A = UsageRule("team-a/*", lambda name: name.startswith("team-a/"))
EVERYTHING = UsageRule("*", lambda name: True)


def test_a_blob_two_repositories_share_counts_once_per_rule_and_replicas_agree(
        driver: StorageDriver, driver_replica: StorageDriver) -> None:
    storage, replica = Storage(driver), Storage(driver_replica)
    here, there = track(storage, [TEAM_A, EVERYTHING]), track(replica, [TEAM_A, EVERYTHING])
    shared, own, elsewhere = os.urandom(5000), os.urandom(300), os.urandom(70)
    push_blob(storage, "team-a/app", shared)
    push_blob(replica, "team-a/tools", shared)  # the same bytes through another replica
    push_blob(replica, "team-a/app", shared)  # pushed again: still once
    push_blob(storage, "team-a/tools", own)
    push_blob(storage, "team-b/app", elsewhere)

    for index in (here, there):
        team = index.usage(TEAM_A)
        assert (team.bytes, team.blobs) == (5300, 2)
        assert Digest.of(shared) in team.digests and Digest.of(elsewhere) not in team.digests
        assert index.usage(EVERYTHING).bytes == 5370


def test_mounts_count_and_unlinking_keeps_what_another_repository_still_links(driver: StorageDriver) -> None:
    storage = Storage(driver)
    index = track(storage, [TEAM_A])
    data = os.urandom(1234)
    digest = push_blob(storage, "team-b/base", data)
    assert index.usage(TEAM_A).bytes == 0
    assert storage.repository("team-a/one").blobs.mount_from(storage.repository("team-b/base").blobs, digest)
    assert storage.repository("team-a/two").blobs.mount_from(storage.repository("team-a/one").blobs, digest)
    assert index.usage(TEAM_A).bytes == 1234

    storage.repository("team-a/one").blobs.unlink(digest)
    assert index.usage(TEAM_A).bytes == 1234  # team-a/two still links it
    storage.repository("team-a/two").blobs.unlink(digest)
    assert index.usage(TEAM_A).bytes == 0


def test_garbage_collection_removing_a_blob_removes_it_from_every_rule(driver: StorageDriver) -> None:
    storage = Storage(driver)
    index = track(storage, [TEAM_A, EVERYTHING])
    orphan = os.urandom(999)
    push_blob(storage, "team-a/app", orphan)
    assert index.usage(EVERYTHING).bytes == 999

    report = collect(storage, grace_seconds=0, now=10**10)
    assert Digest.of(orphan) in report.swept
    assert index.usage(TEAM_A).bytes == 0 and index.usage(EVERYTHING).blobs == 0


def test_a_collection_removing_many_blobs_leaves_the_kept_ones_counted(driver: StorageDriver) -> None:
    storage = Storage(driver)
    index = track(storage, [TEAM_A, EVERYTHING])
    kept = push_image(storage, "team-a/app", simple_image("usage-kept"), "v1")
    kept_bytes = index.usage(TEAM_A).bytes
    for i in range(20):  # more than a collection forgets one by one: one walk per rule
        push_blob(storage, f"team-a/orphans{i % 3}", os.urandom(100 + i))
    assert index.usage(TEAM_A).blobs > 20

    report = collect(storage, grace_seconds=0, now=10**10)
    assert len(report.swept) == 20 and kept not in report.swept
    assert index.usage(TEAM_A).bytes == kept_bytes and index.usage(EVERYTHING).bytes == kept_bytes


def test_rebuild_counts_what_was_there_before_the_rule_and_drops_what_no_link_justifies(
        driver: StorageDriver) -> None:
    storage = Storage(driver)
    shared = os.urandom(4000)
    push_blob(storage, "team-a/app", shared)
    push_blob(storage, "team-a/lib", shared)
    push_blob(storage, "team-a/lib", os.urandom(10))
    push_blob(storage, "team-b/app", os.urandom(20))

    index = track(storage, [TEAM_A])
    before = index.usage(TEAM_A)
    assert (before.bytes, before.built_at) == (0, None)  # content from before the rule is not known yet

    [report] = index.rebuild(now=10**10)
    after = index.usage(TEAM_A)
    assert (after.bytes, after.blobs, report.added) == (4010, 2, 3)
    assert after.built_at == 10**10

    # A link removed behind the index's back (by hand) leaves a marker no link justifies.
    driver.delete("v1/repositories/team-a/lib/_layers")
    assert index.usage(TEAM_A).bytes == 4010
    [report] = index.rebuild(margin=0)
    assert (report.added, report.removed) == (0, 2)
    assert index.usage(TEAM_A).bytes == 4000
    [again] = index.rebuild(margin=0)
    assert (again.added, again.removed) == (0, 0)

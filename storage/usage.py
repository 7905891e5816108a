"""Storage usage per quota rule, kept up to date as repositories link blobs, so reading it is one
paginated listing (no walk of every repository, on any replica).

A rule is a set of repositories (a predicate over names; the registry compiles its globs) known in
storage by its pattern's id (`rule_id`). Its usage is the total size of the *unique* blobs those
repositories link: a blob two of them share counts once. It is kept as one marker object per
(rule, blob, repository linking it), whose key carries the blob's size (`paths.usage_marker`):

- a repository linking a blob anew (an upload completing, a mount, a cache adopting bytes the
  store holds) writes the markers of the rules it falls under *before* the link, so a crash in
  between over-counts rather than lets a push past its quota (`UsageIndex.linking`);
- unlinking one repository's blob removes that repository's markers (`UsageIndex.unlinked`), and
  removing a blob from the store removes every marker of it (`forget`, called by
  `BlobStore.delete`, so garbage collection keeps usage right);
- `UsageIndex.usage` lists one rule's markers and counts each digest once.

Writing a marker is an idempotent put of an empty object, so replicas racing to link the same blob
never count it twice. What is not caught incrementally (a rule added to a store that already holds
content, links removed by hand, a marker write lost to a crash) is repaired by `rebuild`, which
recomputes a rule's markers from the tree (one walk of the repositories, one of the blobs) and
records that it did (`paths.usage_built`); a rule never rebuilt is reported as such, and the
registry rebuilds it before it first enforces it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ocispec.digest import Digest

from . import paths
from .driver.base import FileInfo, StorageDriver
from .errors import PathNotFound
from .links import delete_quietly

if TYPE_CHECKING:  # the repository module imports this one (through blobs): only the type here
    from .repository import Storage

#: Markers younger than this survive a rebuild even when the tree walk did not see their link: a
#: push writes its marker just before its link, possibly after the walk passed that repository.
REBUILD_MARGIN = 10.0


def rule_id(pattern: str) -> str:
    """The stable key component of a rule's pattern (the same on every replica and restart)."""
    return hashlib.sha256(pattern.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class UsageRule:
    """A set of repositories whose usage is counted together: `pattern` names it (its identity in
    storage), `matches` says whether a repository belongs to it."""

    pattern: str
    matches: Callable[[str], bool]

    @property
    def id(self) -> str:
        return rule_id(self.pattern)


@dataclass(frozen=True, slots=True)
class RuleUsage:
    pattern: str
    bytes: int
    blobs: int
    #: The digests counted (what a push of one of them would not add to).
    digests: frozenset[Digest]
    #: When the markers were last recomputed from the tree (seconds since the epoch), None if never.
    built_at: float | None


@dataclass(frozen=True, slots=True)
class RebuildReport:
    pattern: str
    added: int
    removed: int


class UsageIndex:
    """The usage markers of `rules` in one store (`BlobStore.usage` holds the one a registry keeps
    current)."""

    def __init__(self, driver: StorageDriver, rules: Sequence[UsageRule]) -> None:
        self.driver = driver
        self.rules = tuple(rules)

    def rules_for(self, repository: str) -> list[UsageRule]:
        return [rule for rule in self.rules if rule.matches(repository)]

    # -- kept current by the blob stores -------------------------------------------------------
    def linking(self, repository: str, digest: Digest, size: int | None = None) -> None:
        """Count `digest` for every rule `repository` falls under: called just before the
        repository links it. `size` is looked up in the CAS when not given; a blob the CAS does not
        hold is not counted (there is nothing to link)."""
        rules = self.rules_for(repository)
        if not rules:
            return
        if size is None:
            try:
                size = self.driver.stat(paths.blob_data(digest)).size
            except PathNotFound:
                return
        for rule in rules:
            self.driver.put(paths.usage_marker(rule.id, digest, size, repository), b"")

    def unlinked(self, repository: str, digest: Digest) -> None:
        """`repository` no longer links `digest`: its markers go (the other repositories' stay)."""
        for rule in self.rules_for(repository):
            for key in _keys_below(self.driver, paths.usage_blob(rule.id, digest)):
                parts = paths.usage_marker_parts(key)
                if parts is not None and parts[2] == repository:
                    delete_quietly(self.driver, key)

    # -- read ----------------------------------------------------------------------------------
    def counts(self, rule: UsageRule, digest: Digest) -> bool:
        """Whether the rule counts `digest` already: a listing of that blob's markers only (one
        request on S3), not of the rule's."""
        return next(_infos_below(self.driver, paths.usage_blob(rule.id, digest)), None) is not None

    def usage(self, rule: UsageRule) -> RuleUsage:
        """The rule's usage from its markers: one listing."""
        sizes: dict[Digest, int] = {}
        for key in _keys_below(self.driver, paths.usage_blobs(rule.id)):
            parts = paths.usage_marker_parts(key)
            if parts is not None:
                sizes[parts[0]] = parts[1]
        return RuleUsage(rule.pattern, sum(sizes.values()), len(sizes), frozenset(sizes), self.built_at(rule))

    def built_at(self, rule: UsageRule) -> float | None:
        try:
            state = json.loads(self.driver.get(paths.usage_built(rule.id)))
            return float(state["built_at"])
        except PathNotFound:
            return None
        except (ValueError, KeyError, TypeError):
            return None  # unreadable: as if never built, so it is rebuilt

    def measure(self, rule: UsageRule) -> RuleUsage:
        """The rule's usage computed from the tree (a walk of every repository's links and of the
        CAS), writing nothing: for a set of repositories no marker counts."""
        sizes: dict[Digest, int] = {}
        for key in measure(self.driver, [rule])[rule.id]:
            parts = paths.usage_marker_parts(key)
            if parts is not None:
                sizes[parts[0]] = parts[1]
        return RuleUsage(rule.pattern, sum(sizes.values()), len(sizes), frozenset(sizes), None)

    # -- repair --------------------------------------------------------------------------------
    def rebuild(self, rules: Sequence[UsageRule] | None = None, now: float | None = None,
                margin: float = REBUILD_MARGIN) -> list[RebuildReport]:
        """Recompute the markers of `rules` (default: all) from the tree: one walk of the
        repositories' links and one of the CAS, whatever the number of rules. Markers missing are
        written, markers no link justifies (older than `margin`) removed."""
        chosen = tuple(self.rules if rules is None else rules)
        started = time.time() if now is None else now
        wanted = measure(self.driver, chosen)
        reports: list[RebuildReport] = []
        for rule in chosen:
            want = wanted[rule.id]
            have: dict[str, float] = {}
            driver = self.driver
            for info in _infos_below(driver, paths.usage_blobs(rule.id)):
                have[info.key] = info.modified
            added = removed = 0
            for key in want - have.keys():
                driver.put(key, b"")
                added += 1
            for key, modified in have.items():
                if key not in want and modified < started - margin and delete_quietly(driver, key):
                    removed += 1
            driver.put(paths.usage_built(rule.id), json.dumps({"pattern": rule.pattern, "built_at": started}).encode())
            reports.append(RebuildReport(rule.pattern, added, removed))
        return reports


def measure(driver: StorageDriver, rules: Sequence[UsageRule]) -> dict[str, set[str]]:
    """The marker keys each rule (by id) should have, from the tree: every layer link of a
    repository the rule covers whose blob the CAS holds."""
    sizes: dict[Digest, int] = {}
    for info in _infos_below(driver, paths.BLOBS):
        digest = paths.blob_data_digest(info.key)
        if digest is not None:
            sizes[digest] = info.size
    wanted: dict[str, set[str]] = {rule.id: set() for rule in rules}
    matching: dict[str, list[UsageRule]] = {}
    for info in _infos_below(driver, paths.REPOSITORIES):
        owner = paths.layer_link_owner(info.key)
        if owner is None:
            continue
        name, digest = owner
        if digest not in sizes:
            continue  # a link whose blob is gone links nothing
        if name not in matching:
            matching[name] = [rule for rule in rules if rule.matches(name)]
        for rule in matching[name]:
            wanted[rule.id].add(paths.usage_marker(rule.id, digest, sizes[digest], name))
    return wanted


def forget(driver: StorageDriver, digests: Iterable[Digest]) -> int:
    """Remove every rule's markers of `digests` (the blobs are gone from the store); one listing
    of the rules, then per rule one listing per blob or, for many blobs (a collection's batch),
    one walk of its markers and batched deletes. Returns how many blobs had markers."""
    wanted = set(digests)
    if not wanted:
        return 0
    try:
        rule_keys = driver.list(paths.USAGE)
    except PathNotFound:
        return 0  # no rule ever counted anything: the common case costs one listing
    rule_ids = [key.rsplit("/", 1)[1] for key in rule_keys]
    found: set[Digest] = set()
    for rule_id in rule_ids:
        try:
            below = paths.usage_blobs(rule_id)
        except ValueError:
            continue  # not a rule directory
        if len(wanted) <= _FEW:
            # Listed, then deleted key by key: on S3 one listing when there is nothing (the usual
            # case), where deleting a prefix costs several requests even then.
            keys = [key for digest in wanted for key in _keys_below(driver, paths.usage_blob(rule_id, digest))]
        else:
            keys = [info.key for info in _infos_below(driver, below)
                    if (parts := paths.usage_marker_parts(info.key)) is not None and parts[0] in wanted]
        for key in keys:
            parts = paths.usage_marker_parts(key)
            if parts is not None:
                found.add(parts[0])
        for start in range(0, len(keys), 1000):
            driver.delete_many(keys[start:start + 1000])
    return len(found)


#: Up to this many blobs forgotten at once are looked up one by one, more by one walk per rule.
_FEW = 8


def _infos_below(driver: StorageDriver, prefix: str) -> Iterator[FileInfo]:
    try:
        yield from driver.walk(prefix)
    except PathNotFound:
        return


def _keys_below(driver: StorageDriver, prefix: str) -> list[str]:
    return [info.key for info in _infos_below(driver, prefix)]



def track(storage: Storage, rules: Sequence[UsageRule]) -> UsageIndex:
    """Keep `rules`' usage current in `storage` from now on (every link this process writes) and
    return the index to read it by."""
    index = UsageIndex(storage.driver, rules)
    storage.blobs.usage = index if index.rules else None
    return index

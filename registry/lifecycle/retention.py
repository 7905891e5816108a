"""Retention (`retention.rules`): which tags and untagged manifests go, and why (`plan`), and
removing them (`apply`), for `registry retention` and the `retention.interval` job.

A rule names repositories by glob and says what it removes:

- tags: with `keep_last` N, those beyond the N most recently pushed; with `tags_older_than` D,
  those pushed longer ago than D; with both, only those beyond the N newest *and* older than D
  (a tag either keeps is kept, as in zot's retention). Tags `keep_tags` matches are kept for ever;
  so are tags `policy.immutable_tags` protects.
- untagged manifests, with `untagged_older_than` D: once this run's tag removals are done, a
  manifest no tag names and pushed longer ago than D, unless a kept index lists it (a platform
  of a kept image) or it refers to a kept manifest (a signature, an SBOM, an attestation).

Rules only vote on what they configure: a repository several rules match loses a tag only when
one rule removes it and none keeps it, and an untagged manifest only when it is older than
every configured `untagged_older_than`. A rule that configures nothing for tags has no say on tags.

Push time is what storage recorded when the tag was set (`TagInfo.updated`) or the revision was
put (`ManifestStore.pulled_at`), the same on every replica and after restarts. Pull-through
cache repositories are never touched (they expire by `proxy.keep_for`). Just before each removal
the tag (or manifest) is looked at again, so a push since the plan is never undone. Blobs that
only removed manifests named are left to garbage collection.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from dataclasses import dataclass

from ocispec.digest import Digest
from ocispec.manifest import ImageIndex
from storage import ManifestUnknown, NameUnknown, Repository, Storage, StorageError, TagUnknown

from ..events import Event, Events
from ..settings import RetentionRule, Settings
from .immutable import ImmutableRule
from .immutable import parse_rules as immutable_rules
from .quota import matcher

log = logging.getLogger("cargobay.lifecycle")


@dataclass(frozen=True)
class Removal:
    repository: str
    tag: str | None  # a tag, or None for an untagged manifest
    digest: Digest
    pushed: float
    reason: str

    def describe(self) -> str:
        what = f"tag {self.repository}:{self.tag}" if self.tag else f"untagged {self.repository}@{self.digest}"
        return f"{what}: {self.reason}"


@dataclass(frozen=True)
class _Rule:
    index: int
    rule: RetentionRule

    def label(self, *settings: str) -> str:
        return f"rule {self.index}: {', '.join(settings)}"


def plan(storage: Storage, settings: Settings, now: float | None = None) -> list[Removal]:
    """What the rules remove now, repository by repository (nothing is removed here)."""
    now = time.time() if now is None else now
    rules = [(_Rule(i, rule), [matcher(glob) for glob in rule.repositories])
             for i, rule in enumerate(settings.retention.rules)]
    cached = tuple(upstream.host.strip("/") + "/" for upstream in settings.proxy.upstreams)
    protected = immutable_rules(settings.policy.immutable_tags)
    removals: list[Removal] = []
    for name in storage.repositories():
        if cached and name.startswith(cached):
            continue
        matching = [rule for rule, globs in rules if any(match(name) for match in globs)]
        if matching:
            removals += _plan_repository(storage.repository(name), matching, protected, now)
    return removals


def _plan_repository(repo: Repository, rules: list[_Rule], protected: list[ImmutableRule],
                     now: float) -> list[Removal]:
    try:
        tags = {tag: repo.tags.stat(tag) for tag in repo.tags.list()}
    except (NameUnknown, TagUnknown):
        tags = {}
    newest_first = sorted(tags, key=lambda t: (-tags[t].updated, t))
    rank = {tag: i for i, tag in enumerate(newest_first)}
    removals: list[Removal] = []
    for tag in newest_first:
        if any(p.protects(repo.name, tag) for p in protected):
            continue
        if any(_matches_any(tag, r.rule.keep_tags) for r in rules):
            continue
        reason = _tag_verdict(rules, rank[tag], now - tags[tag].updated)
        if reason is not None:
            removals.append(Removal(repo.name, tag, tags[tag].digest, tags[tag].updated, reason))
    removed_tags = {r.tag for r in removals}
    still_tagged = {info.digest for tag, info in tags.items() if tag not in removed_tags}
    return removals + _plan_untagged(repo, rules, still_tagged, now)


def _tag_verdict(rules: list[_Rule], rank: int, age: float) -> str | None:
    """Why the tag goes (the first rule removing it), or None when a rule keeps it or none decides."""
    reason = None
    for r in rules:
        keep_last, older = r.rule.keep_last, r.rule.tags_older_than
        if not keep_last and not older:
            continue  # no say on tags
        beyond = keep_last > 0 and rank >= keep_last
        old = older > 0 and age > older
        removes = (beyond and old) if keep_last and older else (beyond or old)
        if not removes:
            return None
        if reason is None:
            parts = []
            if beyond:
                parts.append(f"beyond the {keep_last} most recently pushed")
            if old:
                parts.append(f"pushed {format_age(age)} ago")
            settings = ([f"keep_last {keep_last}"] if keep_last else []) + (
                [f"tags_older_than {format_age(older)}"] if older else [])
            reason = f"{' and '.join(parts)} ({r.label(*settings)})"
    return reason


def _plan_untagged(repo: Repository, rules: list[_Rule], tagged: set[Digest], now: float) -> list[Removal]:
    limits = [r for r in rules if r.rule.untagged_older_than > 0]
    if not limits:
        return []
    children: dict[Digest, set[Digest]] = {}
    subjects: dict[Digest, Digest] = {}
    pushed: dict[Digest, float] = {}
    for digest in repo.manifests.revisions():
        try:
            pushed[digest] = repo.manifests.pulled_at(digest)
        except ManifestUnknown:
            continue
        manifest = repo.manifests.parsed(digest)
        if manifest is None:
            del pushed[digest]
            continue
        if isinstance(manifest, ImageIndex):
            children[digest] = {d.digest for d in manifest.manifests}
        if manifest.subject is not None:
            subjects[digest] = manifest.subject.digest
    strictest = max(limits, key=lambda r: r.rule.untagged_older_than)
    cutoff = now - strictest.rule.untagged_older_than
    kept = {d for d in pushed if d in tagged or pushed[d] >= cutoff}
    while True:  # what kept indexes list and what refers to kept manifests stays too
        more = {c for d in kept for c in children.get(d, ()) if c in pushed and c not in kept}
        more |= {d for d, subject in subjects.items() if subject in kept and d not in kept}
        if not more:
            break
        kept |= more
    setting = f"untagged_older_than {format_age(strictest.rule.untagged_older_than)}"
    return [Removal(repo.name, None, d, pushed[d], f"pushed {format_age(now - pushed[d])} ago, no tag names it, "
                    f"no kept index lists it, it refers to no kept manifest ({strictest.label(setting)})")
            for d in sorted(set(pushed) - kept, key=str)]


def _matches_any(tag: str, globs: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(tag, glob) for glob in globs)


def apply(storage: Storage, removals: list[Removal], events: Events) -> list[Removal]:
    """Remove what `plan` listed, each looked at again first; returns what was removed. Each
    removal is a `retention.remove` event, and the run is recorded as the job's last."""
    started = time.monotonic()
    done = _remove(storage, removals)
    events.record([Event("retention.remove", repository=r.repository, tag=r.tag or "", digest=str(r.digest),
                         detail=r.reason) for r in done])
    tags = sum(1 for r in done if r.tag is not None)
    storage.record_run("retention", {"tags_removed": tags, "manifests_removed": len(done) - tags,
                                     "repositories": len({r.repository for r in done}),
                                     "milliseconds": int((time.monotonic() - started) * 1000)})
    return done


def _remove(storage: Storage, removals: list[Removal]) -> list[Removal]:
    done: list[Removal] = []
    for removal in removals:
        repo = storage.repository(removal.repository)
        try:
            if removal.tag is not None:
                info = repo.tags.stat(removal.tag)
                if info.digest != removal.digest or info.updated != removal.pushed:
                    continue  # pushed again since the plan
                repo.tags.delete(removal.tag)
            else:
                if repo.tags.tags_of(removal.digest) or repo.manifests.pulled_at(removal.digest) != removal.pushed:
                    continue  # tagged or pushed again since the plan
                repo.manifests.delete(removal.digest)
        except (TagUnknown, ManifestUnknown, NameUnknown):
            continue  # gone meanwhile
        done.append(removal)
    return done


def scheduled(storage: Storage, settings: Settings, events: Events) -> None:
    """The `retention.interval` job: one pass, one log line per removal and a summary."""
    now = time.time()
    try:
        removed = apply(storage, plan(storage, settings, now), events)
    except StorageError as exc:
        log.error("retention failed: %s", exc)
        return
    for removal in removed:
        log.info("retention removed %s", removal.describe())
    log.info("retention: %s", summary(removed, dry_run=False))


def summary(removals: list[Removal], dry_run: bool) -> str:
    tags = sum(1 for r in removals if r.tag is not None)
    manifests = len(removals) - tags
    verb = "would remove" if dry_run else "removed"
    return (f"{verb} {tags} tags and {manifests} untagged manifests in "
            f"{len({r.repository for r in removals})} repositories (their blobs go at the next gc)")


def format_age(seconds: float) -> str:
    """`41d`, `5.5h`, `12m`, `30s`: ages and durations in reasons, rounded down."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            value = seconds / size
            return f"{int(value)}{unit}" if value >= 10 or value == int(value) else f"{int(value * 10) / 10}{unit}"
    return f"{int(seconds)}s"

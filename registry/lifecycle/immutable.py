"""Immutable tags (`policy.immutable_tags`): `repository-glob:tag-glob` rules whose tags, once
pushed, can be neither moved to another digest nor deleted (403 DENIED naming the rule); pushing
the digest a tag already has is allowed, so CI retries stay idempotent.

Every tag a client moves or deletes goes through the manifest handlers, and they ask here first
(`before_tagging`, `before_delete`). The pull-through cache sets its tags in storage directly (they
follow the upstream), so the rules never apply to it. The check and the tag write are two steps:
two first pushes of one protected tag racing on two replicas can both pass, and the later write
wins; after that first push the tag is fixed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.requests import Request

from ocispec.digest import Digest
from ocispec.errors import ErrorCode
from storage import Repository, TagUnknown

from ..auth.rules import RulesError, compile_pattern
from ..errors import RegistryError
from ..handlers.base import run
from ..settings import Settings


@dataclass(frozen=True)
class ImmutableRule:
    text: str
    repositories: re.Pattern[str]
    tags: re.Pattern[str]

    def protects(self, repository: str, tag: str) -> bool:
        return self.repositories.fullmatch(repository) is not None and self.tags.fullmatch(tag) is not None


def _tag_pattern(glob: str) -> re.Pattern[str]:
    if not glob or not re.fullmatch(r"[A-Za-z0-9_.*?-]+", glob):
        raise RulesError(f"tag pattern {glob!r} may hold only A-Z a-z 0-9 _ . - * ?")
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob))


def parse_rules(patterns: Iterable[str]) -> list[ImmutableRule]:
    """Each `repository-glob:tag-glob`; a bad one is a RulesError naming its place in the config."""
    rules = []
    for i, text in enumerate(patterns):
        repositories, colon, tags = text.rpartition(":")
        try:
            if not colon or not repositories:
                raise RulesError(f"expected repository-glob:tag-glob, got {text!r}")
            rules.append(ImmutableRule(text, compile_pattern(repositories), _tag_pattern(tags)))
        except RulesError as exc:
            raise RulesError(f"policy.immutable_tags[{i}]: {exc}") from None
    return rules


class ImmutableTags:
    def __init__(self, settings: Settings) -> None:
        self.rules = parse_rules(settings.policy.immutable_tags)

    def rule_for(self, repository: str, tag: str) -> ImmutableRule | None:
        return next((rule for rule in self.rules if rule.protects(repository, tag)), None)

    def check_tagging(self, repo: Repository, tags: Iterable[str], digest: Digest) -> None:
        """DENIED when one of `tags` is protected and points at another digest already."""
        for tag in tags:
            rule = self.rule_for(repo.name, tag)
            if rule is None:
                continue
            try:
                current = repo.tags.resolve(tag)
            except TagUnknown:
                continue  # its first push
            if current != digest:
                raise _denied(repo.name, tag, rule, f"it points at {current} and cannot be moved")

    def check_delete(self, repo: Repository, tag: str | None, digest: Digest | None) -> None:
        """DENIED when the tag, or any tag on the manifest being deleted, is protected."""
        if tag is not None:
            rule = self.rule_for(repo.name, tag)
            if rule is not None:
                raise _denied(repo.name, tag, rule, "it cannot be deleted")
            return
        if digest is None:
            return
        for name in repo.tags.tags_of(digest):
            rule = self.rule_for(repo.name, name)
            if rule is not None:
                raise _denied(repo.name, name, rule, f"it points at {digest}, which cannot be deleted")


def _denied(repository: str, tag: str, rule: ImmutableRule, what: str) -> RegistryError:
    return RegistryError(ErrorCode.DENIED,
                         f"tag {repository}:{tag} is immutable (policy.immutable_tags rule {rule.text!r}): {what}",
                         detail={"rule": rule.text, "repository": repository, "tag": tag}, status=403)


def install(settings: Settings) -> ImmutableTags | None:
    """The configured rules (None when there are none); create_app keeps them in
    `app.state.immutable_tags`. A bad pattern stops start-up with one line."""
    return ImmutableTags(settings) if settings.policy.immutable_tags else None


def of(request: Request) -> ImmutableTags | None:
    rules: ImmutableTags | None = getattr(request.app.state, "immutable_tags", None)
    return rules


async def before_tagging(request: Request, repo: Repository, tags: tuple[str, ...], raw: bytes,
                         reference: Digest | None) -> None:
    rules = of(request)
    if rules is None or not tags:
        return
    digest = Digest.of(raw, reference.algorithm if reference is not None else "sha256")
    await run(rules.check_tagging, repo, tags, digest)


async def before_delete(request: Request, repo: Repository, tag: str | None, digest: Digest | None) -> None:
    rules = of(request)
    if rules is not None:
        await run(rules.check_delete, repo, tag, digest)

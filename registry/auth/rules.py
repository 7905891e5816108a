"""The access-control list: who may do what to which repositories.

The rules file is YAML (several `---` documents are merged, so tools can append one):

```yaml
groups:
  ci: [robot-build, robot-deploy]
anonymous_pull: ["public/*"]        # anyone, logged in or not, may pull these
rules:
  - users: [alice]                  # user names; "*" means every authenticated user
    groups: [ci]
    repositories: ["team-a/*"]      # glob: * matches any characters including "/", ? one character
    actions: [pull, push]           # pull, push, delete, or * for all three
  - groups: [admins]
    repositories: ["*"]
    actions: ["*"]
    catalog: true                   # may list the catalog (registry:catalog:*)
    metrics: true                   # may read /metrics (registry:metrics:*)
```

Rights only add up: nothing in a rule takes away what another grants. What a rule grants an
authenticated user includes whatever anonymous pull allows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..access import Access
from ..errors import RegistryBaseError
from .scopes import ALL, PULL, REPOSITORY_ACTIONS, holds

_PATTERN_CHARS = re.compile(r"^[a-z0-9._/*?-]+$")
_RULE_KEYS = {"users", "groups", "repositories", "actions", "catalog", "metrics", "description"}
#: The registry-wide resources a rule may grant (`registry:<name>:*`), each by a rule key of its name.
REGISTRY_RESOURCES = ("catalog", "metrics")
_TOP_KEYS = {"groups", "rules", "anonymous_pull"}
ANYONE = "*"


class RulesError(RegistryBaseError, ValueError):
    """A rules file that cannot be used; the message names the file and the place."""


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A repository glob → an anchored regex: `*` any run of characters (including `/`), `?` one
    character other than `/`; every other character stands for itself."""
    if not isinstance(pattern, str) or not _PATTERN_CHARS.fullmatch(pattern):
        raise RulesError(f"repository pattern {pattern!r} may hold only a-z 0-9 . _ / - * ?")
    parts = [".*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch) for ch in pattern]
    return re.compile("^" + "".join(parts) + "$")


@dataclass(frozen=True)
class Rule:
    users: frozenset[str]
    groups: frozenset[str]
    patterns: tuple[re.Pattern[str], ...]
    actions: frozenset[str]
    catalog: bool
    metrics: bool = False

    def grants(self, resource: str) -> bool:
        """Whether the rule grants the registry-wide resource (`catalog`, `metrics`)."""
        return {"catalog": self.catalog, "metrics": self.metrics}.get(resource, False)

    def applies_to(self, subject: str, groups: frozenset[str]) -> bool:
        return subject in self.users or ANYONE in self.users or bool(self.groups & groups)

    def matches(self, name: str) -> bool:
        return any(p.fullmatch(name) for p in self.patterns)


class Rules:
    def __init__(self, rules: Iterable[Rule] = (), groups: dict[str, frozenset[str]] | None = None,
                 anonymous_pull: Iterable[str] = ()) -> None:
        self.rules = tuple(rules)
        self.groups = dict(groups or {})
        self.anonymous = tuple(compile_pattern(p) for p in anonymous_pull)

    def groups_of(self, subject: str) -> frozenset[str]:
        return frozenset(g for g, members in self.groups.items() if subject in members)

    def actions(self, subject: str | None, type_: str, name: str) -> frozenset[str]:
        """Everything `subject` (None: anonymous) may do to one resource."""
        granted: set[str] = set()
        if type_ == "repository":
            if any(p.fullmatch(name) for p in self.anonymous):
                granted.add(PULL)
            if subject is not None:
                groups = self.groups_of(subject)
                for rule in self.rules:
                    if rule.applies_to(subject, groups) and rule.matches(name):
                        granted.update(rule.actions)
        elif type_ == "registry" and name in REGISTRY_RESOURCES and subject is not None:
            groups = self.groups_of(subject)
            if any(rule.grants(name) and rule.applies_to(subject, groups) for rule in self.rules):
                granted.add(ALL)
        return frozenset(granted)

    def grant(self, subject: str | None, requested: Iterable[Access]) -> list[Access]:
        """What a token for `subject` may hold: the requested actions the rules allow (resources
        with nothing allowed are left out)."""
        granted = []
        for access in requested:
            allowed = self.actions(subject, access.type, access.name)
            actions = tuple(a for a in access.actions if holds(allowed, a))
            if actions:
                granted.append(Access(access.type, access.name, actions))
        return granted

    def allows(self, subject: str | None, needed: Iterable[Access]) -> bool:
        return all(all(holds(self.actions(subject, n.type, n.name), a) for a in n.actions) for n in needed)


# -- loading -------------------------------------------------------------------------------------
def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RulesError(f"{where}: expected a list of names")
    return list(value)


def _rule(data: Any, where: str) -> Rule:
    if not isinstance(data, dict):
        raise RulesError(f"{where}: expected a mapping")
    unknown = sorted(set(data) - _RULE_KEYS)
    if unknown:
        raise RulesError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_RULE_KEYS))})")
    users, groups = _strings(data.get("users"), f"{where}.users"), _strings(data.get("groups"), f"{where}.groups")
    if not users and not groups:
        raise RulesError(f"{where}: names no users and no groups")
    actions = _strings(data.get("actions"), f"{where}.actions")
    for action in actions:
        if action not in (*REPOSITORY_ACTIONS, ALL):
            raise RulesError(f"{where}.actions: {action!r} is not one of pull, push, delete, *")
    try:
        patterns = tuple(compile_pattern(p) for p in _strings(data.get("repositories"), f"{where}.repositories"))
    except RulesError as exc:
        raise RulesError(f"{where}.repositories: {exc}") from None
    flags = {}
    for key in REGISTRY_RESOURCES:
        flags[key] = data.get(key, False)
        if not isinstance(flags[key], bool):
            raise RulesError(f"{where}.{key}: expected true or false")
    return Rule(frozenset(users), frozenset(groups), patterns, frozenset(actions), flags["catalog"], flags["metrics"])


def parse_rules(text: str, source: str = "rules") -> Rules:
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise RulesError(f"{source} is not valid YAML{f' at line {mark.line + 1}' if mark else ''}") from None
    rules: list[Rule] = []
    groups: dict[str, set[str]] = {}
    anonymous: list[str] = []
    for number, doc in enumerate(documents, 1):
        where = f"{source} (document {number})" if len(documents) > 1 else source
        if not isinstance(doc, dict):
            raise RulesError(f"{where}: expected a mapping with groups, rules, anonymous_pull")
        unknown = sorted(set(doc) - _TOP_KEYS)
        if unknown:
            raise RulesError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_TOP_KEYS))})")
        group_data = doc.get("groups") or {}
        if not isinstance(group_data, dict):
            raise RulesError(f"{where}: groups must map group names to lists of users")
        for group, members in group_data.items():
            groups.setdefault(str(group), set()).update(_strings(members, f"{where}: groups.{group}"))
        rule_list = doc.get("rules") or []
        if not isinstance(rule_list, list):
            raise RulesError(f"{where}: rules must be a list")
        rules += [_rule(item, f"{where}: rules[{i}]") for i, item in enumerate(rule_list)]
        patterns = _strings(doc.get("anonymous_pull"), f"{where}: anonymous_pull")
        try:
            [compile_pattern(p) for p in patterns]
        except RulesError as exc:
            raise RulesError(f"{where}: anonymous_pull: {exc}") from None
        anonymous += patterns
    return Rules(rules, {g: frozenset(m) for g, m in groups.items()}, anonymous)


def load_rules(path: Path) -> Rules:
    try:
        text = path.read_text()
    except OSError as exc:
        raise RulesError(f"cannot read rules file {path}: {exc.strerror or exc}") from None
    return parse_rules(text, str(path))


def robot_rule_document(name: str, patterns: list[str], actions: list[str], comment: str = "") -> str:
    """A YAML document granting one robot account its rights, for appending to a rules file."""
    for pattern in patterns:
        compile_pattern(pattern)
    doc = {"rules": [{"users": [name], "repositories": patterns, "actions": actions}]}
    _rule(doc["rules"][0], "robot rule")
    header = f"# {comment}\n" if comment else ""
    return "---\n" + header + yaml.safe_dump(doc, default_flow_style=None, sort_keys=False)

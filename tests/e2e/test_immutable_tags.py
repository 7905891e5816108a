"""Immutable tags with skopeo: a protected tag, once pushed, cannot be moved to another image nor
deleted (403 DENIED naming the rule, which skopeo prints); pushing the same image again succeeds;
tags the rules do not name move and go freely; a bad rule stops `registry serve` with one line."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.images import simple_image
from tests.support.servers import REPO_ROOT, RunningServer, free_port, serving, start_cargobay

from .clients import Skopeo, write_dir_layout

RULE = "prod/*:v*"


@pytest.fixture(scope="module")
def protected(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    work = tmp_path_factory.mktemp("immutable")
    config = {"storage": {"filesystem": {"root": str(work / "data")}, "delete": {"enabled": True}},
              "policy": {"immutable_tags": [RULE]}}
    yield from serving(start_cargobay(work, config=config))


def _digest(skopeo: Skopeo, ref: str) -> str:
    return str(skopeo.inspect(ref)["Digest"])


def test_a_protected_tag_is_neither_moved_nor_deleted_but_can_be_pushed_again(
        protected: RunningServer, skopeo: Skopeo, tmp_path: Path) -> None:
    first, second = simple_image("immutable-first"), simple_image("immutable-second")
    first_dir, second_dir = write_dir_layout(tmp_path / "first", first), write_dir_layout(tmp_path / "second", second)
    tag = f"docker://{protected.hostport}/prod/api:v1"

    skopeo.copy(f"dir:{first_dir}", tag, "--preserve-digests")
    assert _digest(skopeo, tag) == first.digest

    moved = skopeo.copy(f"dir:{second_dir}", tag, "--preserve-digests", check=False)
    assert moved.returncode != 0
    assert f"tag prod/api:v1 is immutable (policy.immutable_tags rule '{RULE}')" in moved.stderr
    assert "cannot be moved" in moved.stderr
    assert _digest(skopeo, tag) == first.digest

    skopeo.copy(f"dir:{first_dir}", tag, "--preserve-digests")  # a CI retry of the same image
    assert _digest(skopeo, tag) == first.digest

    deleted = skopeo.delete(tag, check=False)
    assert deleted.returncode != 0 and "is immutable" in deleted.stderr and "cannot be deleted" in deleted.stderr
    assert _digest(skopeo, tag) == first.digest
    by_digest = skopeo.delete(f"docker://{protected.hostport}/prod/api@{first.digest}", check=False)
    assert by_digest.returncode != 0 and "is immutable" in by_digest.stderr
    assert _digest(skopeo, tag) == first.digest


def test_tags_no_rule_names_move_and_go_freely(protected: RunningServer, skopeo: Skopeo, tmp_path: Path) -> None:
    first, second = simple_image("mutable-first"), simple_image("mutable-second")
    first_dir, second_dir = write_dir_layout(tmp_path / "first", first), write_dir_layout(tmp_path / "second", second)
    for ref in (f"docker://{protected.hostport}/prod/api:latest", f"docker://{protected.hostport}/dev/api:v1"):
        skopeo.copy(f"dir:{first_dir}", ref, "--preserve-digests")
        skopeo.copy(f"dir:{second_dir}", ref, "--preserve-digests")
        assert _digest(skopeo, ref) == second.digest
        skopeo.delete(ref)
        assert skopeo("inspect", "--tls-verify=false", ref, check=False).returncode != 0


def test_a_bad_rule_stops_serve_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"storage": {"filesystem": {"root": str(tmp_path / "data")}},
                                      "policy": {"immutable_tags": ["prod/*:v*", "no-colon-here"]}}))
    argv = [sys.executable, "-m", "registry", "serve", "--config", str(config), "--port", str(free_port())]
    result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == ["registry: policy.immutable_tags[1]: expected repository-glob:tag-glob, got 'no-colon-here'"]

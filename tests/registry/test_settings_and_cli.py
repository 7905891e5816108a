"""Configuration: YAML, CARGOBAY_* overrides, one clear line for bad config, documented keys."""

from __future__ import annotations

import ast
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from registry import docs
from registry.settings import SettingsError, describe, load_settings, with_changes
from tests.support.servers import REPO_ROOT, start_cargobay


def test_defaults_file_env_and_overrides_layer_in_order(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("http:\n  port: 6000\nstorage:\n  delete:\n    enabled: true\n  uploads:\n    purge_age: 2h\n")
    settings = load_settings(config, environ={"CARGOBAY_HTTP_PORT": "7000"}, overrides={"http.host": "0.0.0.0"})
    assert settings.http.port == 7000 and settings.http.host == "0.0.0.0"
    assert settings.storage.delete.enabled is True and settings.storage.uploads.purge_age == 7200
    assert load_settings(environ={}).storage.filesystem.root == "./data"


@pytest.mark.parametrize("yaml_text,env,message", [
    ("http:\n  port: nope\n", {}, "http.port: 'nope' is not an integer"),
    ("http:\n  port: 70000\n", {}, "http.port: 70000 is above the maximum 65535"),
    ("htp:\n  port: 1\n", {}, "unknown setting htp"),
    ("storage:\n  driver: floppy\n", {}, "storage.driver: 'floppy' is not one of"),
    ("storage: [1, 2]\n", {}, "storage: expected a mapping"),
    ("http: {port: 1\n", {}, "is not valid YAML"),
    ("", {"CARGOBAY_STORAGE_DELETE_ENABLED": "maybe"}, "storage.delete.enabled: 'maybe' is not a boolean"),
    ("", {"CARGOBAY_HTTP_PROT": "1"}, "unknown environment variable CARGOBAY_HTTP_PROT"),
    ("", {"CARGOBAY_STORAGE_UPLOADS_PURGE_AGE": "soon"}, "is not a duration"),
])
def test_bad_config_is_one_clear_line(tmp_path: Path, yaml_text: str, env: dict[str, str], message: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml_text)
    with pytest.raises(SettingsError) as info:
        load_settings(config, environ=env)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_serve_refuses_bad_config_with_one_line_and_nonzero_exit(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("http:\n  port: nope\n")
    result = subprocess.run([sys.executable, "-m", "registry", "serve", "--config", str(config)],
                            capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == "registry: http.port: 'nope' is not an integer"


def test_serve_refuses_unwritable_root(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = subprocess.run([sys.executable, "-m", "registry", "serve", "--root", str(blocker / "sub")],
                            capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("registry: storage root") and len(result.stderr.strip().splitlines()) == 1


def test_serve_with_yaml_config(tmp_path: Path) -> None:
    root = tmp_path / "yaml-root"
    storage = {"filesystem": {"root": str(root)}, "delete": {"enabled": True}}
    server = start_cargobay(tmp_path, config={"storage": storage, "log": {"level": "warning"}})
    try:
        digest = "sha256:" + hashlib.sha256(b"cfg").hexdigest()
        with httpx.Client(base_url=server.url) as c:
            assert c.post("/v2/cfg/blobs/uploads/", params={"digest": digest}, content=b"cfg").status_code == 201
            assert c.delete(f"/v2/cfg/blobs/{digest}").status_code == 202  # delete.enabled came from the file
        hex_ = digest.split(":")[1]
        assert (root / "v1/blobs/sha256" / hex_[:2] / hex_ / "data").read_bytes() == b"cfg"
    finally:
        server.stop()


def test_every_setting_is_documented() -> None:
    docs = (REPO_ROOT / "docs" / "configuration.md").read_text()
    for info in describe():
        assert f"`{info.key}`" in docs, f"{info.key} is not in docs/configuration.md"
        assert f"`{info.env}`" in docs, f"{info.env} is not in docs/configuration.md"


def test_configuration_reference_is_the_generated_one() -> None:
    assert (REPO_ROOT / "docs" / "configuration.md").read_text() == docs.render(), \
        "regenerate it: python -m registry.docs > docs/configuration.md"


def test_a_changed_copy_is_validated_like_loaded_settings() -> None:
    settings = load_settings(environ={})
    changed = with_changes(settings, **{"http.port": "6001", "storage.uploads.purge_age": "2h"})
    assert (changed.http.port, changed.storage.uploads.purge_age) == (6001, 7200.0)
    assert settings.http.port == 5000  # the original stays as it was
    with pytest.raises(SettingsError, match=r"^http\.port: 0 is below the minimum 1$"):
        with_changes(settings, **{"http.port": 0})


def _registry_imports(path: Path) -> set[str]:
    """The registry modules a registry/settings module imports (absolute names)."""
    package = "registry.settings"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                found.add(f"{base}.{node.module}" if node.module else base)
            elif node.module and node.module.startswith("registry"):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("registry"))
    return found


def test_settings_import_nothing_that_imports_them() -> None:
    """The schema imports no registry module (but its own sections) and the loader only the schema
    and registry.errors, so any module (auth's included) may import the settings without a cycle."""
    folder = REPO_ROOT / "registry" / "settings"
    assert _registry_imports(folder / "operations.py") == set()
    assert _registry_imports(folder / "schema.py") == {"registry.settings.operations"}
    assert _registry_imports(folder / "loader.py") == {"registry.errors", "registry.settings.schema"}
    assert _registry_imports(folder / "__init__.py") == {"registry.settings.loader", "registry.settings.operations",
                                                          "registry.settings.schema"}
    assert not (REPO_ROOT / "registry" / "settings.py").exists()


def test_gc_command_removes_unreferenced_blobs(tmp_path: Path) -> None:
    server = start_cargobay(tmp_path)
    digest = "sha256:" + hashlib.sha256(b"orphan").hexdigest()
    try:
        with httpx.Client(base_url=server.url) as c:
            assert c.post("/v2/gc/blobs/uploads/", params={"digest": digest}, content=b"orphan").status_code == 201
    finally:
        server.stop()
    root = str(server.root)
    run = lambda *extra: subprocess.run([sys.executable, "-m", "registry", "gc", "--root", root, *extra],  # noqa: E731
                                        capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    kept = run()  # the blob is younger than the default grace period
    assert kept.returncode == 0 and "removed 0 blobs" in kept.stdout
    dry = run("--grace", "0", "--dry-run")
    assert "would remove 1 blobs (6 bytes)" in dry.stdout
    done = run("--grace", "0")
    assert "removed 1 blobs" in done.stdout and "1 repository links" in done.stdout
    assert not list((server.root / "v1" / "blobs").rglob("data"))


@pytest.mark.parametrize("command", ["serve", "gc"])
def test_s3_without_boto3_is_one_line_naming_the_extra(tmp_path: Path, command: str) -> None:
    # A Python that cannot import boto3, as after `pip install cargobay` without the s3 extra.
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['boto3'] = None  # import boto3 fails\n")
    config = tmp_path / "c.yaml"
    config.write_text("storage:\n  driver: s3\n  s3:\n    bucket: images\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "registry", command, "--config", str(config)],
                            capture_output=True, text=True, cwd=REPO_ROOT, timeout=60, env=env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "registry: storage.driver s3 needs boto3, which is not installed: pip install 'cargobay[s3]'"]


def test_deletes_are_off_by_default_and_on_with_the_delete_flag(tmp_path: Path) -> None:
    digest = "sha256:" + hashlib.sha256(b"del").hexdigest()
    plain = start_cargobay(tmp_path / "plain")
    try:
        with httpx.Client(base_url=plain.url) as c:
            assert c.post("/v2/del/blobs/uploads/", params={"digest": digest}, content=b"del").status_code == 201
            refused = c.delete(f"/v2/del/blobs/{digest}")
            assert refused.status_code == 405 and refused.json()["errors"][0]["code"] == "UNSUPPORTED"
    finally:
        plain.stop()
    flagged = start_cargobay(tmp_path / "flagged", extra_args=["--delete"])
    try:
        with httpx.Client(base_url=flagged.url) as c:
            assert c.post("/v2/del/blobs/uploads/", params={"digest": digest}, content=b"del").status_code == 201
            assert c.delete(f"/v2/del/blobs/{digest}").status_code == 202
            assert c.get(f"/v2/del/blobs/{digest}").status_code == 404
    finally:
        flagged.stop()


def _registry_cli(*args: str, stdin: int | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "registry", *args], capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=60, stdin=stdin)


def test_gc_on_a_root_the_system_refuses_is_one_line(tmp_path: Path) -> None:
    root = tmp_path / ("r" * 300)  # longer than any file name Linux allows
    result = _registry_cli("gc", "--root", str(root))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("registry: ") and str(root) in lines[0], result.stderr


def test_user_add_without_a_terminal_or_password_is_one_line(tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    result = _registry_cli("user", "add", "bob", "--htpasswd", str(htpasswd), stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "registry: no password given (type it when asked, or pass --password-stdin)")
    assert not htpasswd.exists()

"""`notifications.endpoints[]` settings: a wrong endpoint, or a key file that cannot be read,
stops `registry serve` with one line naming the setting; each endpoint's key variable
(`CARGOBAY_NOTIFICATIONS_<NAME>_SECRET`) is no unknown variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from registry.settings import SettingsError, load_settings, notification_secret_env, settings_from_dict
from tests.support.servers import REPO_ROOT


def endpoints(*entries: dict[str, object]) -> dict[str, object]:
    return {"notifications": {"endpoints": [{"name": "ci", "url": "https://hooks.example/x", **e} for e in entries]}}


@pytest.mark.parametrize("entries,message", [
    ([{"name": "CI"}], "notifications.endpoints[0].name: 'CI' is not a name"),
    ([{}, {"url": "https://other.example/"}], "notifications.endpoints[1].name: ci is configured twice"),
    ([{"url": "ftp://hooks.example/"}], "notifications.endpoints[0].url: 'ftp://hooks.example/' is not an http"),
    ([{"url": "https:///path"}], "notifications.endpoints[0].url:"),
    ([{"url": "https://user:pw@hooks.example/"}], "notifications.endpoints[0].url: holds credentials"),
    ([{"actions": ["push", "tag"]}], "notifications.endpoints[0].actions: 'tag' is not one of push, delete, pull"),
    ([{"actions": []}], "notifications.endpoints[0].actions: names no action"),
    ([{"repositories": ["Team/*"]}], "notifications.endpoints[0].repositories: 'Team/*' may hold only"),
    ([{"backoff": "1m", "max_backoff": "10s"}], "notifications.endpoints[0].max_backoff: 10.0 is below"),
])
def test_a_wrong_endpoint_is_one_line_naming_it(entries: list[dict[str, object]], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        settings_from_dict(endpoints(*entries))
    assert message in str(info.value) and "\n" not in str(info.value)
    assert "pw" not in str(info.value)


def test_the_key_variable_is_known() -> None:
    assert notification_secret_env("ci-hooks") == "CARGOBAY_NOTIFICATIONS_CI_HOOKS_SECRET"
    settings = load_settings(environ={"CARGOBAY_NOTIFICATIONS_CI_HOOKS_SECRET": "k"})
    assert settings.notifications.endpoints == ()


@pytest.mark.parametrize("entry,workers,message", [
    ({"url": "http://"}, 1, "registry: notifications.endpoints[0].url: 'http://' is not an http:// or https:// URL "
     "with a host"),
    ({"secret_file": "/nonexistent/key"}, 1,
     "registry: notifications.endpoints[0].secret_file: cannot read /nonexistent/key: No such file or directory"),
    # With several workers the parent reads it before starting them (not a traceback in each).
    ({"secret_file": "/nonexistent/key"}, 2,
     "registry: notifications.endpoints[0].secret_file: cannot read /nonexistent/key: No such file or directory"),
])
def test_serve_stops_with_one_line(tmp_path: Path, entry: dict[str, object], workers: int, message: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"storage": {"filesystem": {"root": str(tmp_path / "data")}}, **endpoints(entry)}))
    result = subprocess.run([sys.executable, "-m", "registry", "serve", "--port", "1", "--workers", str(workers),
                             "--config", str(config)], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == message

"""Registry credentials from the files Docker and the containers tools keep.

Read, in order (first hit wins): `$REGISTRY_AUTH_FILE`; containers' `auth.json`
(`$XDG_RUNTIME_DIR/containers/auth.json`, `~/.config/containers/auth.json`); Docker's
`$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`). In each file: `credHelpers[host]`,
then `credsStore`, then `auths` (`auth` = base64 `user:password`, or `username`/`password`,
`identitytoken`). Helpers are `docker-credential-<name>` programs (get/store/erase over stdin).

`login`/`logout` write `$REGISTRY_AUTH_FILE` when set, else Docker's config.json, in that format.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocispec.reference import DEFAULT_DOMAIN, LEGACY_DOMAINS

from .errors import AuthenticationError, UsageError

DOCKER_HUB_KEY = "https://index.docker.io/v1/"


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = ""
    identity_token: str = ""

    def __repr__(self) -> str:  # never print secrets
        return f"Credentials(username={self.username!r})"


def normalize_host(key: str) -> str:
    """`https://index.docker.io/v1/` → `docker.io`; `http://h:5000/x` → `h:5000`."""
    text = key.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0].lower()
    return DEFAULT_DOMAIN if text in LEGACY_DOMAINS else text


def _server_url(host: str) -> str:
    return DOCKER_HUB_KEY if normalize_host(host) == "docker.io" else host


def docker_config_path() -> Path:
    return Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"


def auth_files() -> list[Path]:
    files: list[Path] = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        files.append(Path(os.environ["REGISTRY_AUTH_FILE"]))
    if os.environ.get("XDG_RUNTIME_DIR"):
        files.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    files.append(Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "containers" / "auth.json")
    files.append(docker_config_path())
    return files


def write_target() -> Path:
    return Path(os.environ["REGISTRY_AUTH_FILE"]) if os.environ.get("REGISTRY_AUTH_FILE") else docker_config_path()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read credentials file {path}: {exc}") from None
    return data if isinstance(data, dict) else {}


def _helper(name: str, action: str, payload: str) -> str | None:
    """Run `docker-credential-<name> <action>`; None when it reports no credentials."""
    import subprocess  # only here: most runs have no helper (and it costs every run its import)

    program = f"docker-credential-{name}"
    try:
        proc = subprocess.run([program, action], input=payload.encode(), capture_output=True, timeout=60)
    except FileNotFoundError:
        raise AuthenticationError(f"credential helper {program} is not installed") from None
    except subprocess.TimeoutExpired:
        raise AuthenticationError(f"credential helper {program} timed out") from None
    if proc.returncode != 0:
        message = (proc.stdout or proc.stderr).decode(errors="replace").strip()
        if action in ("get", "erase") and "not found" in message.lower():
            return None
        raise AuthenticationError(f"credential helper {program} {action} failed: {message[:200]}")
    return proc.stdout.decode()


def _from_helper(name: str, host: str) -> Credentials | None:
    out = _helper(name, "get", _server_url(host))
    if not out:
        return None
    try:
        data = json.loads(out)
    except ValueError:
        raise AuthenticationError(f"credential helper docker-credential-{name} returned invalid JSON") from None
    user, secret = str(data.get("Username") or ""), str(data.get("Secret") or "")
    if user == "<token>":
        return Credentials(identity_token=secret)
    return Credentials(user, secret) if (user or secret) else None


def _from_entry(entry: Any) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    user, password = str(entry.get("username") or ""), str(entry.get("password") or "")
    if entry.get("auth"):
        try:
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
    token = str(entry.get("identitytoken") or "")
    return Credentials(user, password, token) if (user or password or token) else None


def _lookup_in(data: dict[str, Any], host: str) -> Credentials | None:
    helpers = data.get("credHelpers") or {}
    for key, helper in helpers.items() if isinstance(helpers, dict) else ():
        if normalize_host(key) == host:
            return _from_helper(str(helper), host)
    auths = data.get("auths") or {}
    if data.get("credsStore"):
        found = _from_helper(str(data["credsStore"]), host)
        if found:
            return found
    for key, entry in auths.items() if isinstance(auths, dict) else ():
        if normalize_host(key) == host:
            found = _from_entry(entry)
            if found:
                return found
    return None


def lookup(host: str) -> Credentials | None:
    """Credentials stored for registry `host` (`docker.io`, `localhost:5000`...), if any."""
    host = normalize_host(host)
    for path in auth_files():
        found = _lookup_in(_read_json(path), host)
        if found:
            return found
    return None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    import tempfile  # only `login`/`logout` write

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".auth-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent="\t")
            fh.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def save(host: str, creds: Credentials, path: Path | None = None) -> Path:
    """Store `creds` for `host` (through the file's helper when it names one). Returns the file."""
    path = path or write_target()
    host = normalize_host(host)
    data = _read_json(path)
    helpers: dict[str, Any] = data["credHelpers"] if isinstance(data.get("credHelpers"), dict) else {}
    helper = next((h for k, h in helpers.items() if normalize_host(k) == host), None) or data.get("credsStore")
    auths = data.setdefault("auths", {})
    for key in [k for k in auths if normalize_host(k) == host]:
        del auths[key]
    key = DOCKER_HUB_KEY if host == "docker.io" and path == docker_config_path() else host
    if helper:
        user = "<token>" if creds.identity_token else creds.username
        secret = creds.identity_token or creds.password
        _helper(str(helper), "store", json.dumps({"ServerURL": _server_url(host), "Username": user, "Secret": secret}))
        auths[key] = {}
    else:
        entry: dict[str, str] = {"auth": base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()}
        if creds.identity_token:
            entry["identitytoken"] = creds.identity_token
        auths[key] = entry
    _write_json(path, data)
    return path


def remove(host: str, path: Path | None = None) -> bool:
    """Forget `host`'s credentials in the write target; True when there were any."""
    path = path or write_target()
    host = normalize_host(host)
    data = _read_json(path)
    auths: dict[str, Any] = data["auths"] if isinstance(data.get("auths"), dict) else {}
    keys = [k for k in auths if normalize_host(k) == host]
    helpers: dict[str, Any] = data["credHelpers"] if isinstance(data.get("credHelpers"), dict) else {}
    helper = next((h for k, h in helpers.items() if normalize_host(k) == host), None) or data.get("credsStore")
    removed = bool(keys)
    if helper:
        removed = _helper(str(helper), "erase", _server_url(host)) is not None or removed
    for key in keys:
        del auths[key]
    if keys:
        _write_json(path, data)
    return removed

"""Where settings come from: defaults, then a YAML file, then `CARGOBAY_*` environment variables,
then command-line overrides; each value parsed (durations, booleans, numbers) and checked against
what registry.settings.schema declares. A wrong value is a SettingsError of one line naming the
setting."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import urlsplit

import yaml

from ..errors import RegistryBaseError
from .schema import ENV_PREFIX, Settings, describe, list_item_type


class SettingsError(RegistryBaseError, ValueError):
    """Bad configuration; the message is one line naming the setting and what is wrong."""


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def with_changes(settings: Settings, **dotted: Any) -> Settings:
    """A copy with some dotted keys changed, validated: `with_changes(settings, **{"http.port": 1})`."""
    data = to_dict(settings)
    for key, value in dotted.items():
        _set_dotted(data, key.split("."), value)
    return settings_from_dict(data)


# -- loading -------------------------------------------------------------------------------------
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: Any, key: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise SettingsError(f"{key}: {value!r} is not a duration (like 90, 30s, 15m, 168h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]i?B?|B)?\s*$", re.IGNORECASE)


def parse_size(value: Any, key: str) -> int:
    """Bytes from `500MB`, `50GiB`, `1.5T` or a number (KB/MB/GB are powers of 1000, KiB… of 1024)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise SettingsError(f"{key}: {value!r} is not a size (like 500MB, 50GiB or a number of bytes)")
    unit = (match.group(2) or "B").upper()
    power = "BKMGTP".index(unit[0])
    base = 1024 if "I" in unit else 1000
    return int(float(match.group(1)) * base ** power)


def _coerce(value: Any, kind: type, f: dataclasses.Field[Any], key: str) -> Any:
    meta = f.metadata
    if meta.get("duration"):
        result: Any = parse_duration(value, key)
    elif meta.get("size"):
        result = parse_size(value, key)
    elif kind is bool:
        if isinstance(value, bool):
            result = value
        elif str(value).strip().lower() in ("1", "true", "yes", "on"):
            result = True
        elif str(value).strip().lower() in ("0", "false", "no", "off", ""):
            result = False
        else:
            raise SettingsError(f"{key}: {value!r} is not a boolean (true/false)")
    elif kind is int:
        try:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            result = int(value)
        except (TypeError, ValueError):
            raise SettingsError(f"{key}: {value!r} is not an integer") from None
    elif kind is float:
        try:
            result = float(value)
        except (TypeError, ValueError):
            raise SettingsError(f"{key}: {value!r} is not a number") from None
    elif kind is str:
        if isinstance(value, (dict, list)):
            raise SettingsError(f"{key}: expected a string")
        # YAML's `true` for a string setting means the word, not Python's spelling of it.
        result = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    else:
        result = value
    if meta.get("choices") and result not in meta["choices"]:
        raise SettingsError(f"{key}: {result!r} is not one of {', '.join(meta['choices'])}")
    if "min" in meta and result < meta["min"]:
        raise SettingsError(f"{key}: {result} is below the minimum {meta['min']}")
    if "max" in meta and result > meta["max"]:
        raise SettingsError(f"{key}: {result} is above the maximum {meta['max']}")
    return result


def _list(item: Any, value: Any, f: dataclasses.Field[Any], key: str) -> tuple[Any, ...]:
    """A list setting: of sections (each a mapping, checked like any section) or of strings (a YAML
    list, or one comma-separated string as an environment variable gives it)."""
    if value is None:
        return ()
    if dataclasses.is_dataclass(item):
        if not isinstance(value, (list, tuple)):
            raise SettingsError(f"{key}: expected a list")
        return tuple(_build(item, entry or {}, f"{key}[{i}].") for i, entry in enumerate(value))  # type: ignore[arg-type]
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise SettingsError(f"{key}: expected a list of strings")
    choices = f.metadata.get("choices") or ()
    wrong = [v for v in value if choices and v not in choices]
    if wrong:
        raise SettingsError(f"{key}: {wrong[0]!r} is not one of {', '.join(choices)}")
    return tuple(value)


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise SettingsError(f"{prefix.rstrip('.') or 'config'}: expected a mapping")
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SettingsError(f"unknown setting {prefix}{unknown[0]} (known here: {', '.join(sorted(known))})")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        kind = hints[f.name]
        key = f"{prefix}{f.name}"
        item = list_item_type(kind)
        if dataclasses.is_dataclass(kind):
            kwargs[f.name] = _build(kind, data[f.name] or {}, key + ".")  # type: ignore[arg-type]
        elif item is not None:
            kwargs[f.name] = _list(item, data[f.name], f, key)
        else:
            kwargs[f.name] = _coerce(data[f.name], kind, f, key)
    return cls(**kwargs)


def settings_from_dict(data: Mapping[str, Any]) -> Settings:
    """Settings from a mapping shaped like the YAML file (e.g. `to_dict`'s output), validated."""
    built: Settings = _build(Settings, data, "")
    _check_proxy(built)
    _check_notifications(built)
    return built


_UPSTREAM_HOST = re.compile(r"^[a-z0-9]+(?:[.-][a-z0-9]+)*$")


def _check_proxy(settings: Settings) -> None:
    """What the per-field checks cannot see in `proxy`: hosts valid and distinct, the default one
    of them, URLs that are URLs."""
    proxy = settings.proxy
    hosts: list[str] = []
    for i, upstream in enumerate(proxy.upstreams):
        where = f"proxy.upstreams[{i}]"
        if not _UPSTREAM_HOST.fullmatch(upstream.host):
            raise SettingsError(f"{where}.host: {upstream.host!r} is not a lower-case host name without a port "
                                "(it becomes the first component of repository names)")
        if upstream.host in hosts:
            raise SettingsError(f"{where}.host: {upstream.host} is configured twice")
        hosts.append(upstream.host)
        if upstream.url and not re.fullmatch(r"https?://[^/?#\s]+(/[^?#\s]*)?", upstream.url):
            raise SettingsError(f"{where}.url: {upstream.url!r} is not an http:// or https:// URL")
    if proxy.default and proxy.default not in hosts:
        raise SettingsError(f"proxy.default: {proxy.default!r} is not the host of any of proxy.upstreams")


_ENDPOINT_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
#: A repository glob, as registry.auth.rules.compile_pattern accepts it.
_REPOSITORY_GLOB = re.compile(r"^[a-z0-9._/*?-]+$")


def _check_notifications(settings: Settings) -> None:
    """What the per-field checks cannot see in `notifications.endpoints`: names of the grammar
    (they become storage keys and variable names) and distinct, URLs that are http(s) URLs with a
    host, globs the access rules would accept, at least one action, backoffs in order."""
    names: list[str] = []
    for i, endpoint in enumerate(settings.notifications.endpoints):
        where = f"notifications.endpoints[{i}]"
        if not _ENDPOINT_NAME.fullmatch(endpoint.name):
            raise SettingsError(f"{where}.name: {endpoint.name!r} is not a name of a-z, 0-9 and - "
                                "(at most 64, starting and ending with a letter or digit)")
        if endpoint.name in names:
            raise SettingsError(f"{where}.name: {endpoint.name} is configured twice")
        names.append(endpoint.name)
        _check_endpoint_url(endpoint.url, f"{where}.url")
        if not endpoint.actions:
            raise SettingsError(f"{where}.actions: names no action (push, delete, pull)")
        for pattern in endpoint.repositories:
            if not _REPOSITORY_GLOB.fullmatch(pattern):
                raise SettingsError(f"{where}.repositories: {pattern!r} may hold only a-z 0-9 . _ / - * ?")
        if endpoint.max_backoff < endpoint.backoff:
            raise SettingsError(f"{where}.max_backoff: {endpoint.max_backoff} is below the endpoint's backoff "
                                f"{endpoint.backoff}")


def _check_endpoint_url(url: str, key: str) -> None:
    """An http(s) URL with a host and no credentials (what is said of a wrong one leaves out the
    query, which may hold a token)."""
    try:
        parts = urlsplit(url)
        valid = (parts.scheme in ("http", "https") and url.startswith(f"{parts.scheme}://") and bool(parts.hostname)
                 and (parts.port is None or parts.port > 0) and not re.search(r"\s", url))
    except ValueError:  # a bad port or IPv6 address
        valid = False
    if not valid:
        raise SettingsError(f"{key}: {url.split('?')[0]!r} is not an http:// or https:// URL with a host")
    if parts.username is not None:
        raise SettingsError(f"{key}: holds credentials; receivers check the signature (secret_file) instead")


def _set_dotted(data: dict[str, Any], parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        nested = data.get(part)
        if not isinstance(nested, dict):
            nested = data[part] = {}
        data = nested
    data[parts[-1]] = value


def load_settings(config_file: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None,
                  overrides: Mapping[str, Any] | None = None) -> Settings:
    """Defaults, then the YAML file, then `CARGOBAY_*` variables, then `overrides` (dotted keys,
    from command-line flags). Raises SettingsError with one clear line."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if config_file:
        path = Path(config_file)
        try:
            loaded = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise SettingsError(f"cannot read config file {path}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise SettingsError(f"config file {path} is not valid YAML{where}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise SettingsError(f"config file {path} must hold a mapping of settings")
        data = loaded or {}
    for info in describe():
        if info.env in environ:
            _set_dotted(data, info.key.split("."), environ[info.env])
    known_env = {info.env for info in describe()}
    for name in environ:
        if (name.startswith(ENV_PREFIX) and name not in known_env and not name.startswith(ENV_PREFIX + "_")
                and name not in IGNORED_ENV and not UPSTREAM_PASSWORD_ENV.fullmatch(name)
                and not NOTIFICATION_SECRET_ENV.fullmatch(name)):
            raise SettingsError(f"unknown environment variable {name}")
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, key.split("."), value)
    return settings_from_dict(data)


#: `CARGOBAY_PROXY_<HOST>_PASSWORD`: an upstream's password, read by registry.proxy (not a setting:
#: upstreams are a list, and a secret is better kept out of the settings object).
UPSTREAM_PASSWORD_ENV = re.compile(r"^CARGOBAY_PROXY_[A-Z0-9_]+_PASSWORD$")


def upstream_password_env(host: str) -> str:
    """The variable holding upstream `host`'s password: `docker.io` → CARGOBAY_PROXY_DOCKER_IO_PASSWORD."""
    return f"{ENV_PREFIX}PROXY_{re.sub(r'[^A-Z0-9]', '_', host.upper())}_PASSWORD"


#: `CARGOBAY_NOTIFICATIONS_<NAME>_SECRET`: a notification endpoint's signing key, read by
#: registry.notifications (not a setting, for the same reasons).
NOTIFICATION_SECRET_ENV = re.compile(r"^CARGOBAY_NOTIFICATIONS_[A-Z0-9_]+_SECRET$")


def notification_secret_env(name: str) -> str:
    """The variable holding endpoint `name`'s key: `ci-hooks` → CARGOBAY_NOTIFICATIONS_CI_HOOKS_SECRET."""
    return f"{ENV_PREFIX}NOTIFICATIONS_{re.sub(r'[^A-Z0-9]', '_', name.upper())}_SECRET"


# Variables with the prefix that are not settings (read by tests and tooling, not the server).
IGNORED_ENV = frozenset({"CARGOBAY_REQUIRE_TOOLS", "CARGOBAY_CONFIG", "CARGOBAY_ARTIFACTS"})

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

import yaml

from ..errors import RegistryBaseError
from .schema import ENV_PREFIX, Settings, describe


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


def _coerce(value: Any, kind: type, f: dataclasses.Field[Any], key: str) -> Any:
    meta = f.metadata
    if meta.get("duration"):
        result: Any = parse_duration(value, key)
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
        result = "" if value is None else str(value)
    else:
        result = value
    if meta.get("choices") and result not in meta["choices"]:
        raise SettingsError(f"{key}: {result!r} is not one of {', '.join(meta['choices'])}")
    if "min" in meta and result < meta["min"]:
        raise SettingsError(f"{key}: {result} is below the minimum {meta['min']}")
    if "max" in meta and result > meta["max"]:
        raise SettingsError(f"{key}: {result} is above the maximum {meta['max']}")
    return result


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
        if dataclasses.is_dataclass(kind):
            kwargs[f.name] = _build(kind, data[f.name] or {}, key + ".")  # type: ignore[arg-type]
        else:
            kwargs[f.name] = _coerce(data[f.name], kind, f, key)
    return cls(**kwargs)


def settings_from_dict(data: Mapping[str, Any]) -> Settings:
    """Settings from a mapping shaped like the YAML file (e.g. `to_dict`'s output), validated."""
    built: Settings = _build(Settings, data, "")
    return built


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
                and name not in IGNORED_ENV):
            raise SettingsError(f"unknown environment variable {name}")
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, key.split("."), value)
    return settings_from_dict(data)


# Variables with the prefix that are not settings (read by tests and tooling, not the server).
IGNORED_ENV = frozenset({"CARGOBAY_REQUIRE_TOOLS", "CARGOBAY_CONFIG"})

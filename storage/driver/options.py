"""Driver options from a plain mapping (a settings section): one conversion for every driver's
options dataclass, driven by its field types, so names and types are declared once, on the
dataclass, with its defaults.

Settings normally give the right types; text (from the environment, or a hand-written mapping) is
parsed. None means "not set": the dataclass's default.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from ..errors import StorageConfigError

T = TypeVar("T")


def options_from_mapping(cls: type[T], values: Mapping[str, Any], section: str) -> T:
    """An instance of the options dataclass `cls` from `values`. Unknown names and unconvertible
    values are StorageConfigError naming `section.name`; missing names and None take the default
    (the dataclass's own checks then say what is required)."""
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        if name not in known:
            raise StorageConfigError(f"unknown {section} option {name!r} (known: {', '.join(sorted(known))})")
        if value is None:
            continue
        try:
            kwargs[name] = _convert(value, hints[name])
        except (TypeError, ValueError):
            raise StorageConfigError(f"{section}.{name} has an invalid value {value!r}") from None
    return cls(**kwargs)


def _convert(value: Any, hint: Any) -> Any:
    if get_origin(hint) in (Union, types.UnionType):  # `X | None`: the X
        (hint,) = [arg for arg in get_args(hint) if arg is not type(None)]
    if hint is bool:
        return to_bool(value)
    if hint in (str, int, float):
        return hint(value)
    raise TypeError(f"no conversion to {hint!r}")


def to_bool(value: Any) -> bool:
    text = str(value).strip().lower()
    if text not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(value)
    return text in ("true", "1", "yes")

"""Driver options from a plain mapping (a settings section): one conversion for every driver's
options dataclass, driven by its field types, so names and types are declared once, on the
dataclass, with its defaults.

Settings normally give the right types; text (from the environment, or a hand-written mapping) is
parsed. None means "not set": the dataclass's default.

A field's bounds are declared next to its default, as metadata (`limits`): the dataclass's
`__post_init__` enforces them and the registry's settings schema reads them (`option_limits`), so a
limit exists once.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from ..errors import StorageConfigError

T = TypeVar("T")


def limits(*, min: float | None = None, max: float | None = None,
           choices: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Field metadata declaring an option's smallest and largest value or its allowed values."""
    declared = {"min": min, "max": max, "choices": choices}
    return {name: value for name, value in declared.items() if value is not None}


def option_limits(cls: type, name: str) -> dict[str, Any]:
    """The `min`, `max` and `choices` the options dataclass `cls` declares for its field `name`
    (those it declares; `{}` for none), e.g. to splat into a settings field's metadata."""
    (found,) = [f for f in dataclasses.fields(cls) if f.name == name]
    return {key: found.metadata[key] for key in ("min", "max", "choices") if key in found.metadata}


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

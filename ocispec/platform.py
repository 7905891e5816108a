"""Platforms (`os/arch[/variant]`): parsing, normalisation, the host's own, and matching with the
usual variant fallbacks (arm64 ≡ arm64/v8, arm/v7 runs v6 and v5 images, amd64/v3 runs v2 and v1)."""

from __future__ import annotations

import platform as _host
from dataclasses import dataclass, field
from typing import Any

from .errors import ErrorCode, OCIValidationError

_ARCH_ALIASES = {
    "x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm", "armel": "arm",
    "i386": "386", "i686": "386",
}
_DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7"}
# For each (arch, variant): the variants it can also run, best first.
_VARIANT_FALLBACKS = {
    ("arm", "v8"): ["v8", "v7", "v6", "v5"],
    ("arm", "v7"): ["v7", "v6", "v5"],
    ("arm", "v6"): ["v6", "v5"],
    ("arm", "v5"): ["v5"],
    ("arm64", "v8"): ["v8"],
    ("amd64", "v4"): ["v4", "v3", "v2", "v1"],
    ("amd64", "v3"): ["v3", "v2", "v1"],
    ("amd64", "v2"): ["v2", "v1"],
    ("amd64", "v1"): ["v1"],
}


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = field(default=())

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse `os/arch[/variant]` (e.g. `linux/arm64/v8`), normalising architecture aliases."""
        parts = text.strip().lower().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise OCIValidationError(ErrorCode.UNSUPPORTED, f"invalid platform {text!r}: want os/arch[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "").normalized()

    @classmethod
    def from_json(cls, obj: Any) -> Platform:
        if not isinstance(obj, dict) or not all(isinstance(obj.get(k), str) for k in ("os", "architecture")):
            raise OCIValidationError(ErrorCode.MANIFEST_INVALID, "platform needs string os and architecture")
        features = obj.get("os.features") or ()
        return cls(
            obj["os"], obj["architecture"], str(obj.get("variant") or ""), str(obj.get("os.version") or ""),
            tuple(str(f) for f in features) if isinstance(features, list) else (),
        )

    @classmethod
    def host(cls) -> Platform:
        """The platform of the machine this runs on."""
        system = _host.system().lower() or "linux"
        machine = _host.machine().lower()
        variant = ""
        if machine.startswith("armv") and machine[4:5].isdigit():
            variant, machine = "v" + machine[4], "arm"
        return cls(system, machine, variant).normalized()

    def normalized(self) -> Platform:
        arch = _ARCH_ALIASES.get(self.architecture, self.architecture)
        variant = self.variant or _DEFAULT_VARIANT.get(arch, "")
        return Platform(self.os, arch, variant, self.os_version, self.os_features)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        return out

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def match_rank(wanted: Platform, candidate: Platform) -> int | None:
    """How well `candidate` serves `wanted`: 0 is exact, higher is a worse fallback, None is unusable."""
    w, c = wanted.normalized(), candidate.normalized()
    if w.os != c.os or w.architecture != c.architecture:
        return None
    if w.variant == c.variant:
        return 0
    fallbacks = _VARIANT_FALLBACKS.get((w.architecture, w.variant))
    if fallbacks is None:
        # No known ladder: accept a candidate without a variant as a last resort.
        return 1 if not c.variant else None
    if c.variant in fallbacks:
        return fallbacks.index(c.variant)
    if not c.variant:
        return len(fallbacks)
    return None

"""The puller's configuration: a TOML file saying, per registry host, where to fetch from.

```toml
store = "/var/lib/puller"          # optional default for --store
jobs = 4                           # optional default for --jobs
min_free_space = "2GiB"            # optional default for --min-free-space ("10%", 0; default 5%, >= 1 GiB)

[network]                          # optional; all keys optional
retries = 5                        # attempts after the first, per request
backoff = 0.5                      # first retry delay in seconds, doubled each time (capped at 30)
connect_timeout = 10
read_timeout = 60

[hosts."docker.io"]
mirrors = ["http://central:5000", { url = "https://m2.example", ca_file = "/etc/m2.pem" }]
fallback = true                    # try docker.io itself after the mirrors (default true)

[hosts."registry.local:5000"]
insecure = true                    # plain HTTP
ca_file = "/etc/ssl/local-ca.pem"  # for HTTPS hosts with a private CA
server = "https://other:443"       # optional: where the host itself is reached
token_realms = ["http://auth.local:5001/token"]  # plain-HTTP token realms on another host that
                                   # may receive this host's credentials (HTTPS realms need none)
```

Where it is read from: `--config FILE`, else `$PULLER_CONFIG`, else the system file
(`/etc/puller/config.toml`) overlaid by the per-user one (`$XDG_CONFIG_HOME/puller/config.toml`,
default `~/.config/puller/config.toml`); per-user keys win, host tables are merged host by host.
The `hosts` and `network` tables are the registry client's (`distclient.parse_client_config`); the
top-level keys are the puller's own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distclient import ClientConfig, check_known, parse_client_config

from .errors import UsageError
from .space import DEFAULT_RESERVE, Reserve, parse_reserve

SYSTEM_CONFIG = Path("/etc/puller/config.toml")
TOP_KEYS = ("store", "jobs", "min_free_space", "network", "hosts")


@dataclass(frozen=True)
class Config(ClientConfig):
    """The registry client's configuration plus the puller's own defaults."""

    store: str | None = None
    jobs: int | None = None
    sources: tuple[str, ...] = ()
    min_free_space: Reserve = DEFAULT_RESERVE


def default_config_paths() -> list[Path]:
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return [SYSTEM_CONFIG, Path(xdg) / "puller" / "config.toml"]


def default_store() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "puller"


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read the configuration (see the module docstring for where from). A missing default file is
    fine; a missing explicit file or a malformed one raises UsageError."""
    explicit = path or os.environ.get("PULLER_CONFIG")
    if explicit:
        files = [Path(explicit)]
        if not files[0].is_file():
            raise UsageError(f"config file {explicit} not found")
    else:
        files = [p for p in default_config_paths() if p.is_file()]
    merged: dict[str, Any] = {}
    if files:
        import tomllib  # only when there is a file to read (most nodes run without one)
    for file in files:
        try:
            data = tomllib.loads(file.read_text())
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read config {file}: {exc}") from None
        hosts = {**merged.get("hosts", {}), **data.get("hosts", {})}
        merged.update(data)
        merged["hosts"] = hosts
    return parse_config(merged, tuple(str(f) for f in files))


def parse_config(data: dict[str, Any], sources: tuple[str, ...] = ()) -> Config:
    """Build a Config from already-parsed TOML data."""
    check_known(data, TOP_KEYS, "")
    client = parse_client_config(data)
    jobs = data.get("jobs")
    if jobs is not None and (not isinstance(jobs, int) or jobs < 1):
        raise UsageError("jobs must be a positive integer")
    store = data.get("store")
    if store is not None and not isinstance(store, str):
        raise UsageError("store must be a path")
    reserve = DEFAULT_RESERVE
    if "min_free_space" in data:
        value = data["min_free_space"]
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise UsageError("min_free_space must be a size (\"2GiB\", bytes) or a percentage (\"5%\")")
        try:
            reserve = parse_reserve(value)
        except ValueError as exc:
            raise UsageError(f"min_free_space: {exc}") from None
    return Config(client.hosts, client.network, store, jobs, sources, reserve)

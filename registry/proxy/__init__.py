"""The pull-through cache: the registry serves upstream registries' repositories (docker.io,
ghcr.io…) under canonical names (`docker.io/library/redis`), fetching on first pull, verifying,
keeping a copy and serving it from then on, also while the upstream is down. docs/proxy.md is the
user's side.

Modules: `routing` (the three ways clients name a cached repository, rewritten to its canonical name
before routing), `upstream` (one upstream: distclient clients and credentials), `flight` (one
upstream fetch per thing at a time), `answers` (upstream failures as OCI errors), `cache`
(`PullThrough`: manifests, tags, tag lists), `health` (how each upstream has been
answering this process), `tee` (a blob's first fetch, streamed to the client
while it is stored and verified), `handlers` (the GET handlers registry.routes uses for cached names).
"""

from __future__ import annotations

from .cache import PullThrough
from .handlers import get_blob as cached_blob
from .handlers import get_manifest as cached_manifest
from .handlers import list_tags as cached_tags
from .health import UpstreamHealth
from .routing import NameRouter, ProxyRouting, Target

__all__ = ["NameRouter", "ProxyRouting", "PullThrough", "Target", "UpstreamHealth", "cached_blob", "cached_manifest",
           "cached_tags"]

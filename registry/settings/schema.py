"""What can be configured: every section as a frozen dataclass, with its defaults and help text,
and `describe`, which lists every leaf setting with its YAML key and environment variable.

A setting's dotted path in YAML (`storage.delete.enabled`) and its environment variable
(`CARGOBAY_STORAGE_DELETE_ENABLED`) are derived from the field names; `metadata["help"]` documents
it (docs/configuration.md lists them all) and `duration`, `min`, `max` and `choices` say what the
loader (registry.settings.loader) accepts. This module imports no other registry module; defaults
the OCI model fixes (the manifest size limit) come from ocispec, and the storage drivers' defaults
and limits from their options dataclasses (`storage.S3Options`, `storage.option_limits`), which
define them once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, get_args, get_origin, get_type_hints

from ocispec.manifest import MAX_MANIFEST_SIZE
from storage import S3Options, option_limits

from .operations import AuditSettings, LogSettings, MetricsSettings, NotificationSettings, UiSettings
from .operations import help_text as _help

ENV_PREFIX = "CARGOBAY_"


def _s3(name: str, text: str, **extra: Any) -> dict[str, Any]:
    """Help for the S3 option `name`, with the limits S3Options declares for it (and any the
    settings add: a range that makes sense to configure, within what the driver takes)."""
    return _help(text, **option_limits(S3Options, name), **extra)


@dataclass(frozen=True)
class TlsSettings:
    """`http.tls`: with a certificate, `registry serve` speaks HTTPS itself (no proxy needed)."""

    certificate: str = field(default="", metadata=_help(
        "PEM certificate (chain) the server presents; setting it turns HTTPS on. Empty: plain HTTP."))
    key: str = field(default="", metadata=_help(
        "PEM private key of that certificate (unencrypted). Empty: the key is in the certificate file."))
    client_ca: str = field(default="", metadata=_help(
        "PEM bundle of the CAs whose client certificates are accepted; setting it requires every client to "
        "present one (mutual TLS). Empty: no client certificates asked for."))


@dataclass(frozen=True)
class HttpSettings:
    host: str = field(default="127.0.0.1", metadata=_help("Address to listen on."))
    port: int = field(default=5000, metadata=_help("TCP port to listen on.", min=1, max=65535))
    workers: int = field(default=0, metadata=_help(
        "Worker processes (uvicorn); 0 (the default) means one per CPU core, which serves concurrent clients "
        "best (bench/README.md). 1 keeps everything in one process.", min=0, max=256))
    trusted_proxies: str = field(default="127.0.0.1", metadata=_help(
        "Comma-separated addresses (or *) whose X-Forwarded-For / X-Forwarded-Proto headers are believed: "
        "the client address used for login rate limits comes from them. Empty: trust no proxy."))
    public_url: str = field(default="", metadata=_help(
        "Externally visible base URL (e.g. https://registry.example.com); used in token realms. "
        "Empty: from the request."))
    header_timeout: float = field(default=10.0, metadata=_help(
        "Time a client has to send a request's line and headers (seconds or a duration), counted from the "
        "connection's start or the request's first byte; slower connections are closed.", duration=True, min=1))
    keepalive_timeout: float = field(default=30.0, metadata=_help(
        "An idle keep-alive connection is closed after this long without a new request (seconds or a duration).",
        duration=True, min=1))
    max_connections: int = field(default=1000, metadata=_help(
        "Most open client connections per worker process; 0: no limit. Beyond it idle keep-alive connections are "
        "closed to make room, and requests on further connections get 503 UNAVAILABLE with Retry-After. Keep it "
        "below the process's open-file limit (`ulimit -n`).", min=0))
    tls: TlsSettings = field(default_factory=TlsSettings)


@dataclass(frozen=True)
class FilesystemSettings:
    root: str = field(default="./data", metadata=_help("Directory that holds every blob, manifest and upload."))
    write_ahead_log: bool = field(default=True, metadata=_help(
        "Make small writes (manifests, links, tags, upload states) durable through one write-ahead log in the root "
        "(`.cargobay-log`): a manifest push is two flushes of it instead of two flushes a file. The first process to "
        "open the store after a crash replays it. Off: every file is flushed itself (a log left by a crash is still "
        "replayed), for a root on a filesystem whose `flock` is not shared between the processes that use it (some "
        "network filesystems). Every process of one store must have the same value."))


@dataclass(frozen=True)
class S3Settings:
    """`storage.s3`: the S3 driver's options, by the names of `storage.S3Options`
    (registry.store.storage_options maps them), with its defaults and limits. Empty strings mean
    "not set" (the driver's default, or the standard AWS chain)."""

    bucket: str = field(default=S3Options.bucket, metadata=_help(
        "Bucket that holds everything (required with driver s3)."))
    prefix: str = field(default=S3Options.prefix, metadata=_help(
        "Key prefix inside the bucket (e.g. `cargobay/prod`), so one bucket can hold several registries."))
    region: str = field(default="", metadata=_help(
        "Region to sign requests for (e.g. eu-west-1). "
        "Empty: from the AWS chain (AWS_REGION, profile), else us-east-1."))
    endpoint_url: str = field(default="", metadata=_help(
        "S3 endpoint for MinIO, Ceph RGW, SeaweedFS… (e.g. http://minio:9000). Empty: AWS S3."))
    addressing_style: str = field(default=S3Options.addressing_style, metadata=_s3("addressing_style",
        "Bucket in the path (`path`, what most self-hosted servers need) or in the host name (`virtual`)."))
    access_key: str = field(default="", metadata=_help(
        "Access key id. Prefer leaving it empty: credentials then come from the standard AWS chain "
        "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, an instance or task role)."))
    secret_key: str = field(default="", metadata=_help(
        "Secret key, with `access_key`. Keep it out of config files: use the AWS chain or "
        "CARGOBAY_STORAGE_S3_SECRET_KEY "
        "(e.g. from a Kubernetes Secret)."))
    session_token: str = field(default="", metadata=_help(
        "Session token of temporary credentials "
        "(usually better from the AWS chain or CARGOBAY_STORAGE_S3_SESSION_TOKEN)."))
    part_size: int = field(default=S3Options.part_size, metadata=_s3("part_size",
        "Multipart upload part size in bytes (5 MiB to 5 GiB); memory per upload in flight is about one part. "
        "Blobs up to 10000 parts fit."))
    redirect: bool = field(default=S3Options.redirect, metadata=_help(
        "Answer blob downloads with 307 to a short-lived presigned S3 URL (clients fetch the bytes from S3 directly, "
        "without their registry credentials); false streams them through the registry."))
    retry_mode: str = field(default=S3Options.retry_mode, metadata=_s3("retry_mode",
        "botocore retry mode for throttling, 5xx and timeouts."))
    max_attempts: int = field(default=S3Options.max_attempts, metadata=_s3("max_attempts",
        "Tries per S3 request, the first included; after that the client gets 503 UNAVAILABLE.", max=20))
    connect_timeout: float = field(default=S3Options.connect_timeout, metadata=_s3("connect_timeout",
        "Seconds (or a duration) to wait for a connection to S3.", duration=True, min=0.1))
    read_timeout: float = field(default=S3Options.read_timeout, metadata=_s3("read_timeout",
        "Seconds (or a duration) to wait for S3 to answer or send more bytes.", duration=True, min=0.1))
    max_pool_connections: int = field(default=S3Options.max_pool_connections, metadata=_s3("max_pool_connections",
        "Most connections to S3 kept open per process.", min=1, max=1000))
    multipart_copy_threshold: int = field(default=S3Options.multipart_copy_threshold, metadata=_s3(
        "multipart_copy_threshold",
        "Objects larger than this are copied server-side in parallel ranges (UploadPartCopy) rather than with one "
        "CopyObject (which stops at 5 GiB)."))
    multipart_copy_part_size: int = field(default=S3Options.multipart_copy_part_size, metadata=_s3(
        "multipart_copy_part_size", "Range size of those copies."))
    page_size: int = field(default=S3Options.page_size, metadata=_s3("page_size", "Keys per S3 list request."))
    verify_prefixes: str = field(default="auto", metadata=_help(
        "Whether listings confirm each sub-prefix still holds objects, for servers that report emptied "
        "\"directories\" for a while (SeaweedFS). `auto` detects it from the server.",
        choices=("auto", "true", "false")))


@dataclass(frozen=True)
class DeleteSettings:
    enabled: bool = field(default=False, metadata=_help(
        "Allow DELETE of blobs, manifests and tags; when false those requests get 405 UNSUPPORTED."))


@dataclass(frozen=True)
class UploadSettings:
    purge_age: float = field(default=7 * 86400.0, metadata=_help(
        "Uploads started longer ago than this are removed (seconds, or a duration like 168h, 30m).",
        duration=True, min=1))
    purge_interval: float = field(default=86400.0, metadata=_help(
        "How often abandoned uploads are looked for (seconds or a duration); 0 disables purging.",
        duration=True, min=0))


@dataclass(frozen=True)
class StorageSettings:
    driver: str = field(default="filesystem", metadata=_help(
        "Storage driver: `filesystem` (one machine) or `s3` (a bucket several replicas share).",
        choices=("filesystem", "s3")))
    filesystem: FilesystemSettings = field(default_factory=FilesystemSettings)
    s3: S3Settings = field(default_factory=S3Settings)
    delete: DeleteSettings = field(default_factory=DeleteSettings)
    uploads: UploadSettings = field(default_factory=UploadSettings)
    link_cache_seconds: float = field(default=30.0, metadata=_help(
        "How long serving believes a repository's link to a blob or manifest it saw (seconds or a duration), "
        "where checking one is a round trip (s3): a pull then costs one GET per blob. A delete on another "
        "replica (or by `registry gc`) is seen within this time, one through any worker of this server at once; "
        "blob HEADs and pushes always check. 0: check on every read. On disk every read checks (microseconds).",
        duration=True, min=0, max=3600))


@dataclass(frozen=True)
class LimitSettings:
    max_manifest_bytes: int = field(default=MAX_MANIFEST_SIZE, metadata=_help(
        "Largest manifest accepted; larger ones get 413.", min=1024, max=64 * 1024 * 1024))
    max_page_size: int = field(default=1000, metadata=_help(
        "Most entries one tags or catalog page returns; larger `n` is capped and a Link header points on.", min=1))
    chunk_min_length: int = field(default=1, metadata=_help(
        "Smallest PATCH chunk clients are told to send (OCI-Chunk-Min-Length); Cargobay itself takes any size.", min=1))
    download_chunk_bytes: int = field(default=4 * 1024 * 1024, metadata=_help(
        "Size of the pieces blob downloads are sent in.", min=65536, max=64 * 1024 * 1024))
    upload_buffer_bytes: int = field(default=1024 * 1024, metadata=_help(
        "Bytes of request body gathered before each write to storage.", min=65536, max=64 * 1024 * 1024))


@dataclass(frozen=True)
class ManifestValidationSettings:
    allow_sparse_indexes: bool = field(default=False, metadata=_help(
        "Accept image indexes whose child manifests are not in the repository (e.g. a cache keeping one platform "
        "of a multi-platform image); children that are present must still match their descriptors. False: such "
        "a push gets 400 MANIFEST_BLOB_UNKNOWN."))


@dataclass(frozen=True)
class ValidationSettings:
    manifests: ManifestValidationSettings = field(default_factory=ManifestValidationSettings)


# -- auth: (read by registry.auth) -----------------------------------------------------------------
@dataclass(frozen=True)
class TokenSettings:
    issuer: str = field(default="cargobay", metadata=_help(
        "`iss` of the tokens the built-in token endpoint issues "
        "(Distribution's `auth.token.issuer` must say the same)."))
    expiry: int = field(default=5, metadata=_help("Lifetime of an access token, in minutes.", min=1, max=1440))
    refresh_expiry: int = field(default=10080, metadata=_help(
        "Lifetime of a refresh token (`offline_token=true`, `access_type=offline`), in minutes; 0 issues none.",
        min=0, max=525600))
    algorithm: str = field(default="ES256", metadata=_help(
        "Signature algorithm of the generated key; a configured key decides by its type (EC P-256: ES256, RSA: RS256).",
        choices=("ES256", "RS256")))
    key: str = field(default="", metadata=_help(
        "PEM private key that signs tokens. Empty: a key generated once and kept in `auth.token.key_dir`."))
    certificate: str = field(default="", metadata=_help(
        "PEM certificate of that key (give it to Distribution as `rootcertbundle`). Empty: generated (self-signed)."))
    key_dir: str = field(default="", metadata=_help(
        "Where the generated key and certificate are kept (token-key.pem, token-cert.pem) when `key` is empty. "
        "Empty: `<storage.filesystem.root>/auth` with the filesystem driver; with s3, "
        "`$XDG_STATE_HOME/cargobay/auth` (default `~/.local/state/cargobay/auth`), local to each machine, so "
        "replicas should share one configured `key`."))
    extra_services: str = field(default="", metadata=_help(
        "Comma-separated further `service` names the token endpoint issues tokens for (other registries that "
        "trust this issuer); this registry itself only accepts tokens for `auth.service`."))


@dataclass(frozen=True)
class TrustSettings:
    issuer: str = field(default="", metadata=_help(
        "Also accept tokens from this external issuer (`iss`), verified with the keys below. Empty: none."))
    certificates: str = field(default="", metadata=_help(
        "PEM bundle of the external issuer's certificates (tokens name the key by libtrust `kid` or carry `x5c`)."))
    jwks: str = field(default="", metadata=_help("JWKS file (JSON) with the external issuer's public keys, by `kid`."))


@dataclass(frozen=True)
class RateLimitSettings:
    address_failures: int = field(default=10, metadata=_help(
        "Failed logins allowed from one client address per window; more get 429 TOOMANYREQUESTS.", min=1))
    user_failures: int = field(default=30, metadata=_help(
        "Failed logins allowed for one user name per window (from all addresses together).", min=1))
    window: float = field(default=300.0, metadata=_help(
        "The rate-limit window (seconds or a duration like 5m).", duration=True, min=1))


@dataclass(frozen=True)
class AuthSettings:
    enabled: bool = field(default=False, metadata=_help(
        "Require authentication and enforce the access rules (off: everyone may do everything)."))
    service: str = field(default="cargobay", metadata=_help(
        "Service name in the challenge; the audience (`aud`) every accepted token must carry."))
    realm: str = field(default="", metadata=_help(
        "Token endpoint URL sent in the challenge. Empty: this registry's own `/auth/token` "
        "(under `http.public_url`, or the request's host)."))
    htpasswd: str = field(default="", metadata=_help(
        "htpasswd file of users and robot accounts (bcrypt, as `htpasswd -B` writes it); re-read when it changes."))
    rules: str = field(default="", metadata=_help(
        "YAML file of access rules (users, groups, repository patterns, actions, anonymous pull); re-read when it "
        "changes. Empty: nobody may do anything."))
    basic: bool = field(default=False, metadata=_help(
        "Also accept Basic credentials directly on /v2/ requests (for clients that send them up front)."))
    token: TokenSettings = field(default_factory=TokenSettings)
    trust: TrustSettings = field(default_factory=TrustSettings)
    ratelimit: RateLimitSettings = field(default_factory=RateLimitSettings)


# -- proxy: the pull-through cache (read by registry.proxy) ----------------------------------------
@dataclass(frozen=True)
class UpstreamSettings:
    """One entry of `proxy.upstreams`: a registry the cache pulls through from."""

    host: str = field(default="", metadata=_help(
        "The source host clients name (`ns=docker.io`, `/v2/docker.io/...`); the cached repositories are "
        "`<host>/<name>`. A DNS name without a port (required)."))
    url: str = field(default="", metadata=_help(
        "Where the upstream registry answers (e.g. https://registry-1.docker.io). Empty: `https://<host>`, "
        "and https://registry-1.docker.io for docker.io."))
    username: str = field(default="", metadata=_help(
        "User name for the upstream (Basic or the Docker token flow). Empty: anonymous."))
    password_file: str = field(default="", metadata=_help(
        "File holding the upstream password or token (one line). Empty: the environment variable "
        "CARGOBAY_PROXY_<HOST>_PASSWORD (HOST upper-cased, every other character `_`, e.g. "
        "CARGOBAY_PROXY_DOCKER_IO_PASSWORD), else none."))
    tag_ttl: float = field(default=600.0, metadata=_help(
        "How long a tag's cached answer is trusted before one HEAD asks the upstream again (a duration; 0: "
        "ask every time, still serving the cache when the upstream fails).", duration=True, min=0))
    repositories: tuple[str, ...] = field(default=("*",), metadata=_help(
        "Upstream-side repository globs (`library/*`) this upstream may be asked for; others are 404 "
        "NAME_UNKNOWN. `*` matches across `/`."))
    ca_file: str = field(default="", metadata=_help("PEM CA bundle to verify the upstream's certificate. "
                                                    "Empty: the system's."))
    tls_verify: bool = field(default=True, metadata=_help("Verify the upstream's TLS certificate."))


@dataclass(frozen=True)
class ProxySettings:
    default: str = field(default="", metadata=_help(
        "Upstream host (one of `proxy.upstreams`) serving pulls that name neither `ns` nor a host prefix and "
        "are not local (Docker Engine's `registry-mirrors`). Empty: such pulls are local only."))
    local: tuple[str, ...] = field(default=(), metadata=_help(
        "Repository globs (`team-*/*`) that are always local, even when they do not exist yet: never sent to "
        "the default upstream."))
    keep_for: float = field(default=30 * 86400.0, metadata=_help(
        "`registry gc` removes cached upstream manifests not pulled for this long (a duration; 0: keep for ever).",
        duration=True, min=0))
    connect_timeout: float = field(default=5.0, metadata=_help(
        "Seconds (or a duration) to wait for a connection to an upstream.", duration=True, min=0.1))
    read_timeout: float = field(default=30.0, metadata=_help(
        "Seconds (or a duration) an upstream may take to answer or to send more bytes.", duration=True, min=0.1))
    retries: int = field(default=2, metadata=_help(
        "Retries of a failed upstream request when nothing is cached (a stale tag is served after one try).",
        min=0, max=10))
    upstreams: tuple[UpstreamSettings, ...] = field(default=(), metadata=_help(
        "The upstream registries (a list; each entry's keys below)."))


# -- lifecycle: garbage collection, retention, immutable tags, quotas (read by registry.lifecycle) -------
@dataclass(frozen=True)
class GcSettings:
    interval: float = field(default=0.0, metadata=_help(
        "How often `registry serve` collects garbage itself (a duration); 0: only when `registry gc` is run. "
        "With several replicas one sweeps at a time (a lease object in storage).", duration=True, min=0))
    grace: float = field(default=3600.0, metadata=_help(
        "Blobs and manifests younger than this are never removed: a push in flight may be about to name them "
        "(a duration; docs/lifecycle.md says exactly what it protects).", duration=True, min=1))
    lease_ttl: float = field(default=600.0, metadata=_help(
        "How long a sweeping replica's lease lasts without renewal; a replica that dies holding it loses it "
        "after this (a duration).", duration=True, min=10))


@dataclass(frozen=True)
class RetentionRule:
    """One entry of `retention.rules`: what to remove from the repositories it names."""

    repositories: tuple[str, ...] = field(default=(), metadata=_help(
        "Repository globs the rule applies to (`team-a/*`; `*` matches across `/`)."))
    keep_last: int = field(default=0, metadata=_help(
        "Keep the N most recently pushed tags of each repository; 0: no such limit.", min=0))
    keep_tags: tuple[str, ...] = field(default=(), metadata=_help(
        "Tag globs kept for ever (`v*`, `release-*`), whatever else the rule says."))
    tags_older_than: float = field(default=0.0, metadata=_help(
        "Remove tags pushed longer ago than this (a duration, e.g. 30d); with keep_last, only those also beyond the "
        "last N; 0: none by age.", duration=True, min=0))
    untagged_older_than: float = field(default=0.0, metadata=_help(
        "Remove manifests no tag names, pushed longer ago than this (a duration); those an index or a kept "
        "manifest's referrers name stay; 0: keep them.", duration=True, min=0))


@dataclass(frozen=True)
class RetentionSettings:
    interval: float = field(default=0.0, metadata=_help(
        "How often `registry serve` applies the rules itself (a duration); 0: only `registry retention`.",
        duration=True, min=0))
    rules: tuple[RetentionRule, ...] = field(default=(), metadata=_help(
        "The retention rules (a list; each entry's keys below). A repository several rules name keeps what any "
        "of them keeps."))


@dataclass(frozen=True)
class QuotaRule:
    """One entry of `quotas`: a storage limit for the repositories a prefix glob names."""

    repositories: str = field(default="", metadata=_help(
        "Repository glob the limit covers together (`team-a/*`)."))
    limit: int = field(default=0, metadata=_help(
        "Most bytes of unique blobs those repositories may link (a size: 50GiB, 500MB, or bytes).", size=True,
        min=1))


@dataclass(frozen=True)
class PolicySettings:
    immutable_tags: tuple[str, ...] = field(default=(), metadata=_help(
        "`repository-glob:tag-glob` pairs (`prod/*:v*`) whose tags, once pushed, can be neither moved to another "
        "digest nor deleted (403 DENIED); pushing the same digest again is allowed."))
    quotas: tuple[QuotaRule, ...] = field(default=(), metadata=_help(
        "Storage limits per repository glob (a list; each entry's keys below)."))


@dataclass(frozen=True)
class Settings:
    """The whole configuration, built once (registry.settings.loader) and shared read-only."""

    http: HttpSettings = field(default_factory=HttpSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    log: LogSettings = field(default_factory=LogSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    proxy: ProxySettings = field(default_factory=ProxySettings)
    gc: GcSettings = field(default_factory=GcSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    notifications: NotificationSettings = field(default_factory=NotificationSettings)
    ui: UiSettings = field(default_factory=UiSettings)


# -- introspection -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SettingInfo:
    key: str
    env: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] | None


def describe(cls: type = Settings, prefix: str = "") -> Iterator[SettingInfo]:
    """Every leaf setting with its YAML key, env variable, type, default and help text."""
    hints = get_type_hints(cls)
    instance = cls()
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        kind = hints[f.name]
        item = list_item_type(kind)
        if dataclasses.is_dataclass(kind):
            yield from describe(kind, key + ".")  # type: ignore[arg-type]
        elif item is not None and dataclasses.is_dataclass(item):
            # A list of sections (`proxy.upstreams`): its entries' keys, which no variable sets.
            yield SettingInfo(key, "", kind, (), f.metadata.get("help", ""), None)
            for sub in describe(item, key + "[]."):  # type: ignore[arg-type]
                yield dataclasses.replace(sub, env="")
        else:
            yield SettingInfo(key, env_name(key), kind, getattr(instance, f.name), f.metadata.get("help", ""),
                              f.metadata.get("choices"))


def list_item_type(kind: Any) -> Any:
    """`X` for a `tuple[X, ...]` setting (a YAML list), else None."""
    if get_origin(kind) is tuple:
        args = get_args(kind)
        if len(args) == 2 and args[1] is Ellipsis:
            return args[0]
    return None


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper().replace(".", "_")

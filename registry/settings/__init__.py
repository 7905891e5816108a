"""One frozen settings object, read from a YAML file and `CARGOBAY_*` environment variables.

Every setting is a field of the dataclasses in `schema` (auth's section included); its dotted path
in YAML (`storage.delete.enabled`) and its environment variable (`CARGOBAY_STORAGE_DELETE_ENABLED`)
are derived from the field names, and `metadata["help"]` documents it (docs/configuration.md lists
them all; a test checks that). `loader` reads them: environment variables override the file; the
file overrides the defaults. The schema imports no other registry module and the loader only the
schema (and registry.errors for SettingsError's base), so every other module may import this one.
"""

from __future__ import annotations

from .loader import (
    IGNORED_ENV,
    SettingsError,
    load_settings,
    notification_secret_env,
    parse_duration,
    parse_size,
    settings_from_dict,
    to_dict,
    upstream_password_env,
    with_changes,
)
from .operations import (
    NOTIFY_ACTIONS,
    AuditSettings,
    LogSettings,
    MetricsSettings,
    NotificationEndpoint,
    NotificationSettings,
    UiSettings,
)
from .schema import (
    ENV_PREFIX,
    AuthSettings,
    DeleteSettings,
    FilesystemSettings,
    GcSettings,
    HttpSettings,
    LimitSettings,
    ManifestValidationSettings,
    PolicySettings,
    ProxySettings,
    QuotaRule,
    RateLimitSettings,
    RetentionRule,
    RetentionSettings,
    S3Settings,
    SettingInfo,
    Settings,
    StorageSettings,
    TlsSettings,
    TokenSettings,
    TrustSettings,
    UploadSettings,
    UpstreamSettings,
    ValidationSettings,
    describe,
    env_name,
)

__all__ = [
    "ENV_PREFIX",
    "IGNORED_ENV",
    "NOTIFY_ACTIONS",
    "AuditSettings",
    "AuthSettings",
    "DeleteSettings",
    "FilesystemSettings",
    "GcSettings",
    "HttpSettings",
    "LimitSettings",
    "LogSettings",
    "ManifestValidationSettings",
    "MetricsSettings",
    "NotificationEndpoint",
    "NotificationSettings",
    "PolicySettings",
    "ProxySettings",
    "QuotaRule",
    "RateLimitSettings",
    "RetentionRule",
    "RetentionSettings",
    "S3Settings",
    "SettingInfo",
    "Settings",
    "SettingsError",
    "StorageSettings",
    "TlsSettings",
    "TokenSettings",
    "TrustSettings",
    "UiSettings",
    "UploadSettings",
    "UpstreamSettings",
    "ValidationSettings",
    "describe",
    "env_name",
    "load_settings",
    "notification_secret_env",
    "parse_duration",
    "parse_size",
    "settings_from_dict",
    "to_dict",
    "upstream_password_env",
    "with_changes",
]

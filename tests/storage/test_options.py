"""Driver options: typed once, in storage's dataclasses, with their defaults and limits; the
registry's settings map onto them."""

from __future__ import annotations

import pytest

from registry.settings import SettingsError, load_settings
from registry.store import storage_options
from storage import FilesystemOptions, S3Options, StorageConfigError, driver_options


def test_settings_left_unset_give_the_drivers_own_defaults() -> None:
    """An unset setting means the driver's default, whichever side a default is read from."""
    s3 = load_settings(environ={}, overrides={"storage.driver": "s3", "storage.s3.bucket": "images"})
    assert storage_options(s3) == S3Options(bucket="images")
    fs = load_settings(environ={})
    assert storage_options(fs) == FilesystemOptions(root="./data")


def test_settings_reach_the_options_typed() -> None:
    settings = load_settings(environ={"CARGOBAY_STORAGE_DRIVER": "s3", "CARGOBAY_STORAGE_S3_BUCKET": "b",
                                      "CARGOBAY_STORAGE_S3_PREFIX": "/team/prod/",
                                      "CARGOBAY_STORAGE_S3_PART_SIZE": str(32 * 1024 * 1024),
                                      "CARGOBAY_STORAGE_S3_REDIRECT": "true",
                                      "CARGOBAY_STORAGE_S3_VERIFY_PREFIXES": "false",
                                      "CARGOBAY_STORAGE_S3_CONNECT_TIMEOUT": "2s"})
    options = storage_options(settings)
    assert isinstance(options, S3Options)
    assert (options.prefix, options.part_size, options.redirect, options.verify_prefixes, options.connect_timeout) \
        == ("team/prod", 32 * 1024 * 1024, True, False, 2.0)
    assert options.region is None and options.access_key is None  # empty: the AWS chain decides


def test_settings_refuse_at_load_what_the_driver_would_refuse() -> None:
    """The settings take their limits from the options: a value the S3 driver cannot use stops
    loading with the settings' one line naming the setting (not later, when the driver opens)."""
    cases = [
        ({"CARGOBAY_STORAGE_S3_PART_SIZE": str(5 * 1024 * 1024 - 1)},
         "storage.s3.part_size: 5242879 is below the minimum 5242880"),
        ({"CARGOBAY_STORAGE_S3_MULTIPART_COPY_THRESHOLD": str(5 * 1024 ** 3 + 1)},
         "storage.s3.multipart_copy_threshold: 5368709121 is above the maximum 5368709120"),
        ({"CARGOBAY_STORAGE_S3_PAGE_SIZE": "1001"}, "storage.s3.page_size: 1001 is above the maximum 1000"),
        ({"CARGOBAY_STORAGE_S3_RETRY_MODE": "legacy"},
         "storage.s3.retry_mode: 'legacy' is not one of standard, adaptive"),
        ({"CARGOBAY_STORAGE_S3_ADDRESSING_STYLE": "dns"},
         "storage.s3.addressing_style: 'dns' is not one of auto, path, virtual"),
    ]
    for environ, message in cases:
        with pytest.raises(SettingsError) as info:
            load_settings(environ={"CARGOBAY_STORAGE_DRIVER": "s3", "CARGOBAY_STORAGE_S3_BUCKET": "b", **environ})
        assert str(info.value) == message
    edge = load_settings(environ={"CARGOBAY_STORAGE_DRIVER": "s3", "CARGOBAY_STORAGE_S3_BUCKET": "b",
                                  "CARGOBAY_STORAGE_S3_PART_SIZE": str(5 * 1024 * 1024),
                                  "CARGOBAY_STORAGE_S3_PAGE_SIZE": "1000"})
    assert storage_options(edge) == S3Options(bucket="b", part_size=5 * 1024 * 1024, page_size=1000)


def test_bad_options_are_one_line_naming_the_option() -> None:
    cases = [
        ("filesystem", {}, "storage.filesystem.root is required"),
        ("filesystem", {"root": "/x", "rot": "/y"}, "unknown storage.filesystem option 'rot'"),
        ("s3", {"region": "eu-west-1"}, "storage.s3.bucket is required"),
        ("s3", {"bucket": "b", "page_size": "lots"}, "storage.s3.page_size has an invalid value 'lots'"),
        ("s3", {"bucket": "b", "part_size": 1024}, "storage.s3: part_size must be 5 MiB to 5 GiB"),
        ("floppy", {}, "unknown storage driver 'floppy'"),
    ]
    for kind, values, message in cases:
        with pytest.raises(StorageConfigError) as info:
            driver_options(kind, values)
        assert message in str(info.value) and "\n" not in str(info.value), (kind, values)


def test_secrets_stay_out_of_the_options_repr() -> None:
    """Options end up in error reports and debug logs; the credentials must not."""
    options = S3Options(bucket="b", access_key="AKIDEXAMPLE", secret_key="wJalr-secret", session_token="tok-secret")
    assert "wJalr-secret" not in repr(options) and "tok-secret" not in repr(options)
    assert options.secret_key == "wJalr-secret"

"""The store the settings name: `storage.driver` and its section turned into storage's driver.

Its own module, apart from the application, so that the commands that only need the store
(`registry gc`, `check`, `usage`, `retention`) load none of the server.
"""

from __future__ import annotations

from storage import DriverOptions, StorageDriver, driver_options, open_driver

from .settings import Settings, to_dict


def storage_options(settings: Settings) -> DriverOptions:
    """The options of the driver `storage.driver` names, from that driver's settings section
    (storage's options dataclasses have the names, types and checks)."""
    section = settings.storage
    values = to_dict(getattr(section, section.driver))
    if section.driver == "s3":
        # Settings cannot hold "unset": an empty string (or `auto`) leaves the option to the
        # driver's default, e.g. credentials from the standard AWS chain.
        values = {name: value for name, value in values.items() if value not in ("", "auto")}
    return driver_options(section.driver, values)


def storage_driver(settings: Settings) -> StorageDriver:
    """The driver the `storage` settings describe (not yet contacted: `check()` does that)."""
    return open_driver(storage_options(settings))

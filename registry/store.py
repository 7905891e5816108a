"""The store the settings name: `storage.driver` and its section turned into storage's driver,
and the store a server serves from (`serving_storage`), whose workers share one board of links.

Its own module, apart from the application, so that the commands that only need the store
(`registry gc`, `check`, `usage`, `retention`) load none of the server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from storage import DriverOptions, LinkBoard, Storage, StorageDriver, driver_options, open_driver, remembers_links

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


#: Internal (not a setting): the file of the board `registry serve`'s workers share.
LINK_BOARD_ENV = "CARGOBAY__LINK_BOARD"


@contextlib.contextmanager
def shared_link_board(settings: Settings, driver: StorageDriver, workers: int) -> Iterator[None]:
    """While `registry serve` runs several workers that remember links (`storage.remembers_links`:
    on S3 with `link_cache_seconds` above 0): one board they all attach to (storage.link_board), so
    what one saw all believe and what one deleted none believes; removed at the end. Otherwise
    none, and none inherited."""
    if workers <= 1 or not remembers_links(driver.capabilities, settings.storage.link_cache_seconds):
        os.environ.pop(LINK_BOARD_ENV, None)  # another server's board is not this one's
        yield
        return
    directory = Path(tempfile.mkdtemp(prefix="cargobay-links-"))  # 0700: nobody else moves its marks
    LinkBoard.create(directory / "board")
    os.environ[LINK_BOARD_ENV] = str(directory / "board")
    try:
        yield
    finally:
        os.environ.pop(LINK_BOARD_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)


def serving_storage(settings: Settings, driver: StorageDriver) -> Storage:
    """The store a server serves from: links it saw are believed for `storage.link_cache_seconds`
    (storage.recent_links), and its workers share the board `shared_link_board` made, if any."""
    board_file = os.environ.get(LINK_BOARD_ENV)
    board = LinkBoard.attach(Path(board_file)) if board_file else None
    return Storage(driver, link_cache_seconds=settings.storage.link_cache_seconds, board=board)

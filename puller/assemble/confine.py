"""A directory tree reached only through file descriptors, never by handing the kernel a path.

Every path is resolved one component at a time from a descriptor of the root with `O_NOFOLLOW`. A
symlink in the middle of a path is followed the way the kernel follows it inside a chroot (an
absolute target restarts at the root), except that a `..` which would climb above the root is
refused instead of clamped: nothing reached this way is ever outside the root.
"""

from __future__ import annotations

import errno
import os
import stat

from ..errors import UnsafeContent, VerificationError

MAX_SYMLINK_HOPS = 40
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: Directories held open for the entries that follow them (tar order: a directory, what it holds,
#: then its siblings), so that a name is resolved once rather than once per entry.
OPEN_DIRS = 64

Real = tuple[str, ...]  # a path below the root with every component a real directory (no symlinks)


class LayerFormatError(VerificationError):
    """A layer entry that cannot be applied: a missing hardlink target, a file used as a directory."""


def split_name(name: str, what: str = "name") -> tuple[str, ...]:
    """The components of a member name. Absolute names and any `..` are refused outright."""
    if name.startswith("/"):
        raise UnsafeContent(f"absolute {what} {name!r}")
    comps = tuple(c for c in name.split("/") if c not in ("", "."))
    if ".." in comps:
        raise UnsafeContent(f"{what} {name!r} contains '..'")
    return comps


class ConfinedTree:
    """The root directory `path`, held open; subclasses add what they do inside it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.root_fd = os.open(self.path, DIR_FLAGS)
        self._open_dirs: dict[tuple[str, ...], tuple[int, Real]] = {}

    def close(self) -> None:
        self._forget_dirs()
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1

    def _before_mkdir(self, real: Real, fd: int, name: str) -> None:
        """Called before `_walk` creates the missing directory `name` in `real` (open as `fd`)."""

    def _walk(self, comps: tuple[str, ...], *, create: bool, what: str) -> tuple[int, Real] | None:
        """Open the directory `comps` names below the root, following symlinks only inside it.

        With `create`, missing directories are made (mode 0755, as umoci does); without, a missing
        or non-directory component gives None. Returns a new fd the caller must close.
        """
        fds = [self.root_fd]
        real: list[str] = []
        pending = list(reversed(comps))
        hops = 0
        via = ""
        try:
            while pending:
                comp = pending.pop()
                if comp in ("", "."):
                    continue
                if comp == "..":
                    if not real:
                        raise UnsafeContent(f"{what} leads outside the root"
                                            + (f" through the symlink {via}" if via else ""))
                    real.pop()
                    os.close(fds.pop())
                    continue
                st = self._lstat(fds[-1], comp)
                if st is None:
                    if not create:
                        return None
                    self._before_mkdir(tuple(real), fds[-1], comp)
                    os.mkdir(comp, 0o755, dir_fd=fds[-1])
                elif stat.S_ISLNK(st.st_mode):
                    hops += 1
                    if hops > MAX_SYMLINK_HOPS:
                        raise LayerFormatError(f"{what}: too many levels of symbolic links")
                    target = os.readlink(comp, dir_fd=fds[-1])
                    via = f"{'/'.join([*real, comp])!r} -> {target!r}"
                    if target.startswith("/"):
                        while len(fds) > 1:
                            os.close(fds.pop())
                        real.clear()
                    pending.extend(reversed(target.split("/")))
                    continue
                elif not stat.S_ISDIR(st.st_mode):
                    if not create:
                        return None
                    raise LayerFormatError(f"{'/'.join([*real, comp])!r} is not a directory")
                fd = os.open(comp, DIR_FLAGS, dir_fd=fds[-1])
                fds.append(fd)
                real.append(comp)
                if st is None:
                    os.fchmod(fd, 0o755)  # independent of the umask
            result = fds.pop() if len(fds) > 1 else os.dup(self.root_fd)
            return result, tuple(real)
        finally:
            for fd in fds[1:]:
                os.close(fd)

    def _dir(self, comps: tuple[str, ...]) -> tuple[int, Real]:
        """The directory `comps` names, created if missing (as `_walk` does), held open: the fd
        belongs to the tree and stays valid until `_forget_dirs`.

        What is held stays right as long as nothing in the tree is removed or replaced: callers
        call `_forget_dirs` after any removal (a directory that goes, a symlink where a directory
        was, change where names lead). Creating an entry where nothing was cannot change it: every
        name held was resolved through entries that existed (`_walk` creates what is missing), so
        none led through the new one.
        """
        found = self._open_dirs.pop(comps, None)  # re-inserted below: the most recently used last
        if found is None:
            found = self._walk(comps, create=True, what="the path")
            if found is None:  # with create=True _walk makes what is missing or raises
                raise LayerFormatError(f"cannot create the directory {'/'.join(comps)!r}")
        self._hold_dir(comps, *found)
        return found

    def _hold_dir(self, comps: tuple[str, ...], fd: int, real: Real) -> None:
        """Keep `fd` (the directory `comps` names, at `real`) open for later entries; the tree
        closes it (the least recently used goes first when OPEN_DIRS are held)."""
        old = self._open_dirs.pop(comps, None)
        if old is not None:
            os.close(old[0])
        while len(self._open_dirs) >= OPEN_DIRS:
            os.close(self._open_dirs.pop(next(iter(self._open_dirs)))[0])
        self._open_dirs[comps] = (fd, real)

    def _forget_dirs(self) -> None:
        """Close every directory held open (after anything was removed or replaced)."""
        held, self._open_dirs = self._open_dirs, {}
        for fd, _ in held.values():
            os.close(fd)

    def _open_real(self, real: Real) -> int | None:
        """Open a directory by its real path, following nothing; None when it is gone."""
        fd = os.dup(self.root_fd)
        for comp in real:
            try:
                nfd = os.open(comp, DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    return None
                raise
            os.close(fd)
            fd = nfd
        return fd

    def read_file(self, path: str, limit: int) -> bytes | None:
        """A small regular file of the tree, symlinks resolved inside the root (None if absent,
        not a regular file, reached only by leaving the root, or larger than `limit`)."""
        comps = tuple(c for c in path.split("/") if c not in ("", "."))
        for _ in range(MAX_SYMLINK_HOPS):
            if not comps:
                return None
            try:
                found = self._walk(comps[:-1], create=False, what=path)
            except (UnsafeContent, LayerFormatError):
                return None
            if found is None:
                return None
            dir_fd, parent = found
            try:
                st = self._lstat(dir_fd, comps[-1])
                if st is None:
                    return None
                if stat.S_ISLNK(st.st_mode):
                    target = os.readlink(comps[-1], dir_fd=dir_fd)
                    rest = tuple(target.split("/"))
                    comps = rest if target.startswith("/") else parent + rest
                    continue
                if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
                    return None
                fd = os.open(comps[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
                with open(fd, "rb") as f:
                    return f.read(limit + 1)[:limit]
            finally:
                os.close(dir_fd)
        return None

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

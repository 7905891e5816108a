"""Applying tar layer entries to a root directory without ever touching anything outside it.

Paths are resolved by `confine.ConfinedTree` (from a descriptor of the root, one component at a
time, symlinks in the middle of a name followed only inside the root). The last component of a name
is never followed: whatever is there (file, symlink, directory) is replaced, not written through.
The root itself stays mode 0700 until `finish()`, so no other user can reach into the tree (and race
it) while it is being built; with `private_root` it stays 0700 for good.

Semantics follow the OCI image-spec layer rules as `umoci unpack` implements them: entries replace
what is at their path unless both are directories; whiteouts (`.wh.<name>`) and opaque markers
(`.wh..wh..opq`) only remove what lower layers left (paths this layer created or passed through are
kept); the parent directory's times are put back after an entry changed it, so a directory ends
with the mtime its own header gave it, whatever was added to it afterwards.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tarfile
from collections.abc import Callable
from typing import BinaryIO

from ..errors import UnsafeContent
from .confine import DIR_FLAGS, ConfinedTree, LayerFormatError, Real, split_name
from .newfiles import NewFileDefaults

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
XATTR_PAX_PREFIX = "SCHILY.xattr."
#: Never restored from a layer (a label of the machine that built it, meaningless here); as umoci.
IGNORED_XATTRS = frozenset({"security.selinux"})
COPY_CHUNK = 1 << 20

_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_XATTR_SOFT_ERRNOS = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES})


def _times(member: tarfile.TarInfo) -> tuple[int, int]:
    """(atime_ns, mtime_ns); PAX times keep their nanoseconds."""
    mtime = _pax_time(member.pax_headers.get("mtime"))
    if mtime is None:
        mtime = int(member.mtime) * 1_000_000_000
    atime = _pax_time(member.pax_headers.get("atime"))
    return (mtime if atime is None else atime), mtime


def _pax_time(text: str | None) -> int | None:
    if not text:
        return None
    from decimal import Decimal, InvalidOperation  # only layers with PAX times need it

    try:
        return int(Decimal(text) * 1_000_000_000)
    except (InvalidOperation, ValueError):
        return None


def _xattrs(member: tarfile.TarInfo) -> dict[str, bytes]:
    return {
        key[len(XATTR_PAX_PREFIX):]: value.encode("utf-8", "surrogateescape")
        for key, value in member.pax_headers.items()
        if key.startswith(XATTR_PAX_PREFIX)
    }


def _kind(member: tarfile.TarInfo) -> str | None:
    if member.isreg():
        return "file"
    if member.isdir():
        return "dir"
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    if member.isfifo():
        return "fifo"
    if member.ischr():
        return "chardev"
    if member.isblk():
        return "blockdev"
    return None


class RootTree(ConfinedTree):
    """A root directory that layer entries are applied to. Not thread-safe; one per unpack."""

    def __init__(self, path: str | os.PathLike[str], *, privileged: bool, warn: Callable[[str], None],
                 private_root: bool = False) -> None:
        super().__init__(path)
        self.privileged = privileged
        #: Keep the root itself 0700 after finish() (whatever mode the image gives it).
        self.private_root = private_root
        self.warn = warn
        self.skipped_devices: list[str] = []
        # Per layer: directory times to put back at the layer's end, and the paths this layer
        # created or passed through (what whiteouts must keep).
        self._dir_times: dict[Real, tuple[int, int]] = {}
        self._upper: set[Real] = set()
        # Modes applied by finish(): the root's (private until then), and unprivileged, every
        # directory's, which stay u+rwx so later layers can still write and delete in them.
        self._final_modes: dict[Real, int] = {(): 0o755}
        os.fchmod(self.root_fd, 0o700)
        self._warned: set[str] = set()
        self._acl_defaults = False
        self._new = NewFileDefaults(self.root_fd, privileged)

    # -- lifecycle --------------------------------------------------------------------------

    def begin_layer(self) -> None:
        self._upper = set()
        self._dir_times = {}
        self.skipped_devices = []

    def end_layer(self) -> None:
        """Put back the times of every directory this layer changed, deepest first."""
        self._forget_dirs()
        for real in sorted(self._dir_times, key=len, reverse=True):
            fd = self._open_real(real)
            if fd is None:
                continue
            try:
                os.utime(fd, ns=self._dir_times[real])
            finally:
                os.close(fd)
        self._dir_times = {}
        self._upper = set()

    def finish(self) -> None:
        """Apply the deferred directory modes (the root's last, unless it stays private): the tree
        is complete."""
        if self.private_root:
            self._final_modes.pop((), None)
        for real in sorted(self._final_modes, key=len, reverse=True):
            fd = self._open_real(real)
            if fd is None:
                continue
            try:
                os.fchmod(fd, self._final_modes[real])
            finally:
                os.close(fd)
        self._final_modes = {}

    # -- entries ----------------------------------------------------------------------------

    def apply(self, member: tarfile.TarInfo, data: BinaryIO | None) -> None:
        """Apply one tar member (`data` is the member's content for regular files)."""
        comps = split_name(member.name)
        if not comps:
            self._apply_root(member)
            return
        base = comps[-1]
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(comps)
            return
        kind = _kind(member)
        if kind is None:
            self._warn_once(f"type:{member.type!r}", f"skipping tar entries of unsupported type {member.type!r} "
                                                     f"(first: {member.name!r})")
            return
        link_comps = split_name(member.linkname, "hardlink target") if kind == "hardlink" else ()
        if kind == "hardlink" and not link_comps:
            raise UnsafeContent("hardlink to the root directory")
        if kind in ("chardev", "blockdev") and not self.privileged:
            self.skipped_devices.append(member.name)
            return

        dir_fd, parent = self._dir(comps[:-1])
        real = (*parent, base)
        self._touch(parent, dir_fd)
        if kind == "file" and self._new_file(dir_fd, base, parent, member, data):
            self._mark_upper(real)
            return
        existing = self._lstat(dir_fd, base)
        keep_dir = existing is not None and stat.S_ISDIR(existing.st_mode) and kind == "dir"
        # Replacing what is there may change how later names resolve: forget the directories held
        # open once this entry is done (not before: dir_fd is one of them). A new entry cannot
        # (ConfinedTree._dir says why).
        replacing = existing is not None and not keep_dir
        try:
            if existing is not None and not keep_dir:
                self._remove(dir_fd, base, real, existing)
            self._create(dir_fd, base, comps, real, kind, member, data, link_comps, existed=keep_dir)
        except BaseException:
            self._forget_dirs()
            raise
        if replacing:
            self._forget_dirs()
        self._mark_upper(real)

    def _mark_upper(self, real: Real) -> None:
        """`real` and the directories above it are this layer's (whiteouts keep them)."""
        for i in range(len(real), 0, -1):
            if real[:i] in self._upper:
                break
            self._upper.add(real[:i])

    def _new_file(self, dir_fd: int, base: str, parent: Real, member: tarfile.TarInfo, data: BinaryIO | None) -> bool:
        """The common case in one step: a regular file where nothing is yet. O_CREAT|O_EXCL with
        O_NOFOLLOW creates it or fails when any entry (a symlink too, never followed) has the name;
        then it is False, and the entry goes the general way (what is there is replaced). It is
        created with its mode, when that is what it then has, and is chowned only when it would
        not already have its owner (newfiles)."""
        mode = member.mode & 0o7777
        keeps_mode = not self._acl_defaults and self._new.keeps_mode(mode)
        try:
            fd = os.open(base, _NEW_FILE_FLAGS, mode if keeps_mode else 0o600, dir_fd=dir_fd)
        except FileExistsError:
            return False
        keeps_owner = self.privileged and self._new.keeps_owner(parent, member.uid, member.gid)
        self._fill_file(fd, member, data, keeps_mode=keeps_mode, keeps_owner=keeps_owner)
        return True

    def _create(self, dir_fd: int, base: str, comps: tuple[str, ...], real: Real, kind: str,
                member: tarfile.TarInfo, data: BinaryIO | None, link_comps: tuple[str, ...], *, existed: bool) -> None:
        if kind == "file":
            if not self._new_file(dir_fd, base, real[:-1], member, data):  # what was there is gone
                raise FileExistsError(errno.EEXIST, "appeared while it was being replaced", member.name)
        elif kind == "dir":
            self._make_dir(dir_fd, base, comps, real, member, existed=existed)
        elif kind == "symlink":
            os.symlink(member.linkname, base, dir_fd=dir_fd)
            self._node_metadata(dir_fd, base, real, member, chmod=False)
        elif kind == "hardlink":
            self._make_hardlink(dir_fd, base, link_comps, member.linkname)
        else:
            if kind == "fifo":
                os.mkfifo(base, 0o600, dir_fd=dir_fd)
            else:
                kind_bit = stat.S_IFCHR if kind == "chardev" else stat.S_IFBLK
                try:
                    os.mknod(base, kind_bit | 0o600, os.makedev(member.devmajor, member.devminor), dir_fd=dir_fd)
                except PermissionError:  # root without CAP_MKNOD (a user namespace, a container)
                    self.skipped_devices.append(member.name)
                    return
            self._node_metadata(dir_fd, base, real, member, chmod=True)

    def _apply_root(self, member: tarfile.TarInfo) -> None:
        if not member.isdir():
            raise UnsafeContent("entry would replace the root directory with a non-directory")
        fd = os.dup(self.root_fd)
        try:
            self._fd_metadata(fd, (), member, is_dir=True, clear=True)
        finally:
            os.close(fd)

    def _fill_file(self, fd: int, member: tarfile.TarInfo, data: BinaryIO | None, *, keeps_mode: bool,
                   keeps_owner: bool) -> None:
        """Write a new file's content and metadata through `fd`, which this closes."""
        try:
            if data is not None and member.size:
                while chunk := data.read(COPY_CHUNK):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
            self._fd_metadata(fd, None, member, is_dir=False, clear=self._acl_defaults, keeps_mode=keeps_mode,
                              keeps_owner=keeps_owner)
        finally:
            os.close(fd)

    def _make_dir(self, dir_fd: int, base: str, comps: tuple[str, ...], real: Real, member: tarfile.TarInfo, *,
                  existed: bool) -> None:
        if not existed:
            os.mkdir(base, 0o700, dir_fd=dir_fd)
        fd = os.open(base, DIR_FLAGS, dir_fd=dir_fd)
        try:
            self._fd_metadata(fd, real, member, is_dir=True, clear=existed or self._acl_defaults)
        except BaseException:
            os.close(fd)
            raise
        self._hold_dir(comps, fd, real)  # what it holds usually comes next

    def _make_hardlink(self, dir_fd: int, base: str, target: tuple[str, ...], linkname: str) -> None:
        found = self._walk(target[:-1], create=False, what=f"hardlink target {linkname!r}")
        if found is None:
            raise LayerFormatError(f"hardlink target {linkname!r} does not exist")
        target_dir, _ = found
        try:
            st = self._lstat(target_dir, target[-1])
            if st is None:
                raise LayerFormatError(f"hardlink target {linkname!r} does not exist")
            if stat.S_ISDIR(st.st_mode):
                raise LayerFormatError(f"hardlink target {linkname!r} is a directory")
            os.link(target[-1], base, src_dir_fd=target_dir, dst_dir_fd=dir_fd, follow_symlinks=False)
        finally:
            os.close(target_dir)

    # -- metadata ---------------------------------------------------------------------------

    def _fd_metadata(self, fd: int, real: Real | None, member: tarfile.TarInfo, *, is_dir: bool, clear: bool,
                     keeps_mode: bool = False, keeps_owner: bool = False) -> None:
        """Owner, mode, xattrs and times through an open descriptor (regular files, directories);
        `keeps_mode`/`keeps_owner`: a new file that already has its mode or owner."""
        if self.privileged and not keeps_owner:
            os.fchown(fd, member.uid, member.gid)  # before chmod: chown clears setuid/setgid
            if is_dir and real is not None:
                self._new.dir_group(real, member.gid)
        mode = member.mode & 0o7777
        if is_dir and real is not None and (real == () or not self.privileged):
            self._final_modes[real] = mode
            mode = 0o700 if real == () else mode | 0o700
        if not keeps_mode:
            os.fchmod(fd, mode)
        self._set_xattrs(fd, member, clear)
        times = _times(member)
        os.utime(fd, ns=times)
        if is_dir and real is not None:
            self._dir_times[real] = times

    def _node_metadata(self, dir_fd: int, base: str, real: Real, member: tarfile.TarInfo, *, chmod: bool) -> None:
        """The same for symlinks, fifos and devices, by name relative to their directory's fd."""
        if self.privileged:
            os.chown(base, member.uid, member.gid, dir_fd=dir_fd, follow_symlinks=False)
        if chmod:  # only for nodes we just created (never symlinks), so following is harmless
            os.chmod(base, member.mode & 0o7777, dir_fd=dir_fd)
        # xattr calls take no dir_fd; `real` is free of symlinks and nobody else writes here.
        self._set_xattrs(os.path.join(self.path, *real), member, self._acl_defaults)
        os.utime(base, ns=_times(member), dir_fd=dir_fd, follow_symlinks=False)

    def _set_xattrs(self, target: int | str, member: tarfile.TarInfo, clear: bool) -> None:
        wanted = _xattrs(member)
        nofollow = {} if isinstance(target, int) else {"follow_symlinks": False}
        if clear:
            try:
                present = os.listxattr(target, **nofollow)
            except OSError as exc:
                if exc.errno not in _XATTR_SOFT_ERRNOS:
                    raise
                present = []
            for name in present:
                if name not in wanted and name not in IGNORED_XATTRS:
                    try:
                        os.removexattr(target, name, **nofollow)
                    except OSError as exc:
                        if exc.errno not in _XATTR_SOFT_ERRNOS and exc.errno != errno.ENODATA:
                            raise
        for name, value in wanted.items():
            if name in IGNORED_XATTRS:
                self._warn_once(f"xattr:{name}", f"ignoring xattr {name} (first on {member.name!r})")
                continue
            try:
                os.setxattr(target, name, value, **nofollow)
            except OSError as exc:
                if exc.errno not in _XATTR_SOFT_ERRNOS:
                    raise
                self._warn_once(f"xattr:{name}:{exc.errno}",
                                f"could not set xattr {name} on {member.name!r}: {exc.strerror} "
                                "(further such failures are not reported)")
                continue
            if name == "system.posix_acl_default":
                self._acl_defaults = True  # children now inherit ACLs their headers may not have

    # -- whiteouts ---------------------------------------------------------------------------

    def _whiteout(self, comps: tuple[str, ...]) -> None:
        base = comps[-1]
        if base == OPAQUE_MARKER:
            victim = None
        elif base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            return  # other .wh..wh.* names are aufs bookkeeping, not whiteouts
        else:
            victim = base[len(WHITEOUT_PREFIX):]
            if victim in ("", ".", ".."):
                raise UnsafeContent(f"whiteout {base!r} does not name an entry of its directory")
        found = self._walk(comps[:-1], create=False, what="whiteout")
        if found is None:
            return  # its directory is not there: nothing to hide
        dir_fd, parent = found
        self._forget_dirs()
        try:
            if victim is None:
                self._touch(parent, dir_fd)
                for child in os.listdir(dir_fd):
                    self._purge(dir_fd, child, (*parent, child))
            elif self._lstat(dir_fd, victim) is not None:
                self._touch(parent, dir_fd)
                self._purge(dir_fd, victim, (*parent, victim))
        finally:
            os.close(dir_fd)

    def _purge(self, dir_fd: int, name: str, real: Real) -> None:
        """Remove what lower layers put at `real`, keeping whatever this layer created below it."""
        st = self._lstat(dir_fd, name)
        if st is None:
            return
        if real not in self._upper:
            self._remove(dir_fd, name, real, st)
            return
        if stat.S_ISDIR(st.st_mode):
            fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
            try:
                children = os.listdir(fd)
                if any((*real, child) not in self._upper for child in children):
                    self._touch(real, fd)
                for child in children:
                    self._purge(fd, child, (*real, child))
            finally:
                os.close(fd)

    def _remove(self, dir_fd: int, name: str, real: Real, st: os.stat_result) -> None:
        """Remove one entry (a directory with all it holds). Callers forget the directories held open."""
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=dir_fd)  # fd-based, never follows symlinks
            self._forget(real)
        else:
            os.unlink(name, dir_fd=dir_fd)

    def _forget(self, real: Real) -> None:
        n = len(real)
        for table in (self._dir_times, self._final_modes):
            for key in [k for k in table if k[:n] == real]:
                del table[key]
        self._new.forget(real)

    # -- resolution ---------------------------------------------------------------------------

    def _before_mkdir(self, real: Real, fd: int, name: str) -> None:
        self._touch(real, fd)
        self._new.made_dir(real, name)

    def _touch(self, real: Real, fd: int) -> None:
        """`real` is about to change: remember its times (once per layer) to put them back."""
        if real not in self._dir_times:
            st = os.fstat(fd)
            self._dir_times[real] = (st.st_atime_ns, st.st_mtime_ns)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.warn(message)

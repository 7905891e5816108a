"""What a regular file created in the tree gets without being asked: its mode and its owner. The
unpacker then sets either only where it differs from what the layer says: for a small image that
is ~2,000 `fchmod` and, as root, ~2,000 `fchown` calls fewer (each one also a round of the GIL
with the decompressing thread).

Nothing is assumed: a probe file created in the root at the start shows which permission bits a
new file keeps of those it asks for (the umask, or a default ACL inherited from where the root
was made) and whom the filesystem makes it belong to (a root-squashing or otherwise unusual
filesystem turns the owner shortcut off). A new file's group is the process's, or its directory's
(setgid directories, `grpid` mounts): the shortcut is taken only in directories known to belong to
the process's group, which this tracks as the unpacker sets each directory's group.
"""

from __future__ import annotations

import os

from .confine import Real

_PROBE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class NewFileDefaults:
    """For one tree (its root open as `root_fd`, mode 0700, nothing in it yet)."""

    def __init__(self, root_fd: int, privileged: bool) -> None:
        self.euid, self.egid = os.geteuid(), os.getegid()
        #: Directories whose group is not (or may not be) the process's: files made there may get it.
        self.other_group: set[Real] = set()
        if os.fstat(root_fd).st_gid != self.egid:
            self.other_group.add(())
        #: The permission bits a new file keeps of those it asks for (None: none may be relied on).
        self.mask: int | None = None
        self.owner_shortcut = False
        probe = _probe(root_fd)
        if probe is not None:
            self.mask = probe.st_mode & 0o777
            self.owner_shortcut = privileged and probe.st_uid == self.euid and (
                probe.st_gid == self.egid or () in self.other_group)

    def keeps_mode(self, mode: int) -> bool:
        """Whether a file created asking for `mode` has exactly that mode (no set-id or sticky bit:
        those go through fchmod, after the owner is set)."""
        return self.mask is not None and mode & ~self.mask == 0

    def keeps_owner(self, parent: Real, uid: int, gid: int) -> bool:
        """Whether a file created in directory `parent` is already owned by `uid`:`gid`."""
        return self.owner_shortcut and uid == self.euid and gid == self.egid and parent not in self.other_group

    def dir_group(self, real: Real, gid: int) -> None:
        """Directory `real` was given group `gid`."""
        if gid == self.egid:
            self.other_group.discard(real)
        else:
            self.other_group.add(real)

    def made_dir(self, parent: Real, name: str) -> None:
        """A directory was created in `parent` without a group given: it may have inherited parent's."""
        if parent in self.other_group:
            self.other_group.add((*parent, name))

    def forget(self, real: Real) -> None:
        """`real` and everything below it were removed."""
        n = len(real)
        self.other_group = {r for r in self.other_group if r[:n] != real}


def _probe(root_fd: int) -> os.stat_result | None:
    """The status of a file created (asking for mode 0777) in the root, then removed; None when
    none could be made."""
    name = f".puller-probe-{os.getpid()}"
    try:
        fd = os.open(name, _PROBE_FLAGS, 0o777, dir_fd=root_fd)
    except OSError:
        return None
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)
        os.unlink(name, dir_fd=root_fd)

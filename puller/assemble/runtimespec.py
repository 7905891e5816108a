"""An OCI runtime-spec `config.json` for a bundle, generated from the image config.

The conversion follows image-spec's "conversion" document and matches what `umoci unpack` writes:
the runc default template (namespaces, standard mounts, masked paths, a small capability set), then
Env, Entrypoint + Cmd, WorkingDir, User (names resolved through the image's own /etc/passwd and
/etc/group, which also give HOME and the supplementary groups), Volumes as tmpfs mounts, Labels and
the other image fields as annotations. Unprivileged, the rootless variant of the template is used.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from ..errors import PullError

SPEC_VERSION = "1.0.2"
MAX_ACCOUNT_FILE = 4 * 1024 * 1024
MAX_ID = 2**31 - 1

_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]

_TEMPLATE: dict[str, Any] = {
    "ociVersion": SPEC_VERSION,
    "process": {
        "terminal": True,
        "user": {"uid": 0, "gid": 0},
        "args": ["sh"],
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
        "cwd": "/",
        "capabilities": {key: list(_CAPS) for key in ("bounding", "effective", "inheritable", "permitted", "ambient")},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
    },
    "root": {"path": "rootfs"},
    "hostname": "puller",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",  # noqa: S108 (inside the container)
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ],
    "linux": {
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
        "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                        "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    },
}


class ImageConfigError(PullError):
    """The image config cannot be turned into a runtime config (a User the image does not define)."""


def _rootless(spec: dict[str, Any], uid: int, gid: int) -> None:
    """The changes `runc spec --rootless` makes: a user namespace mapping root to the caller."""
    linux = spec["linux"]
    linux.pop("resources", None)
    linux["namespaces"] = [ns for ns in linux["namespaces"] if ns["type"] != "network"] + [{"type": "user"}]
    linux["uidMappings"] = [{"containerID": 0, "hostID": uid, "size": 1}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": gid, "size": 1}]
    mounts = []
    for mount in spec["mounts"]:
        if mount["destination"] == "/sys/fs/cgroup":
            continue
        if mount["destination"] == "/sys":
            mount = {"destination": "/sys", "type": "none", "source": "/sys",
                     "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}
        elif mount["destination"] == "/dev/pts":
            mount = {**mount, "options": [o for o in mount["options"] if o != "gid=5"]}
        mounts.append(mount)
    spec["mounts"] = mounts


def _set_env(env: list[str], name: str, value: str) -> None:
    entry = f"{name}={value}"
    for i, old in enumerate(env):
        if old.startswith(name + "="):
            env[i] = entry
            return
    env.append(entry)


def _accounts(data: bytes | None, fields: int) -> list[list[str]]:
    if not data:
        return []
    rows = []
    for line in data.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) < fields:
            parts += [""] * (fields - len(parts))
        rows.append(parts)
    return rows


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() and int(text) <= MAX_ID else None


def resolve_user(spec: str, passwd: bytes | None, group: bytes | None) -> tuple[int, int, list[int], str | None]:
    """(uid, gid, additional gids, home) for a config `User` (`name|uid[:group|gid]`), the way
    runc/umoci resolve it: names must exist in the image; numeric ids need not."""
    user_arg, _, group_arg = spec.partition(":")
    uid, gid, home, name = 0, 0, None, None
    users = _accounts(passwd, 7)
    user_num = _int(user_arg)
    for row in users:
        row_uid = _int(row[2])
        if (user_arg == "" and row_uid == 0) or (user_num is not None and row_uid == user_num) or \
                (user_num is None and user_arg and row[0] == user_arg):
            name, uid, gid, home = row[0], row_uid or 0, _int(row[3]) or 0, row[5] or None
            break
    else:
        if user_arg and user_num is None:
            raise ImageConfigError(f"image config User {spec!r}: no user {user_arg!r} in the image's /etc/passwd")
        if user_num is not None:
            uid = user_num
    groups = _accounts(group, 4)
    extra: list[int] = []
    if group_arg:
        group_num = _int(group_arg)
        for row in groups:
            if (group_num is not None and _int(row[2]) == group_num) or (group_num is None and row[0] == group_arg):
                gid = _int(row[2]) or 0
                break
        else:
            if group_num is None:
                raise ImageConfigError(f"image config User {spec!r}: no group {group_arg!r} in the image's /etc/group")
            gid = group_num
    elif name is not None:
        extra = [_int(row[2]) or 0 for row in groups if name in row[3].split(",")]
    return uid, gid, extra, home


_KINDS: dict[type, str] = {str: "a string", list: "a list of strings", dict: "an object"}


def _typed(obj: dict[str, Any], key: str, kind: type, where: str = "config.") -> Any:
    """`obj[key]` when it has the JSON type `kind` (a list: of strings), the empty value when absent
    or null; ImageConfigError otherwise, as Go's decoder refuses such a config in umoci and runc."""
    value: Any = obj.get(key)
    if value is None:
        return kind()
    wrong_items = isinstance(value, list) and not all(isinstance(item, str) for item in value)
    if not isinstance(value, kind) or wrong_items:
        raise ImageConfigError(f"image config {where}{key} must be {_KINDS[kind]}")
    return value


def runtime_config(image_config: dict[str, Any], read_file: Callable[[str], bytes | None], *,
                   rootless: bool = False, host_ids: tuple[int, int] = (0, 0)) -> dict[str, Any]:
    """The runtime-spec config for `image_config` (the parsed image config JSON). `read_file` reads a
    small file of the unpacked rootfs (resolved inside it), for /etc/passwd and /etc/group.
    ImageConfigError for a config that is not a Linux one or whose fields have the wrong types."""
    text = {key: _typed(image_config, key, str, "") for key in ("os", "architecture", "author", "created")}
    os_name = text["os"] or "linux"
    if os_name != "linux":
        raise ImageConfigError(f"cannot make a runtime config for a {os_name!r} image")
    cfg = _typed(image_config, "config", dict, "")
    strings = {key: _typed(cfg, key, str) for key in ("WorkingDir", "User", "StopSignal")}
    lists = {key: _typed(cfg, key, list) for key in ("Env", "Entrypoint", "Cmd")}
    objects = {key: _typed(cfg, key, dict) for key in ("Volumes", "ExposedPorts", "Labels")}
    if not all(isinstance(value, str) for value in objects["Labels"].values()):
        raise ImageConfigError("image config config.Labels must map names to strings")
    spec = copy.deepcopy(_TEMPLATE)
    if rootless:
        _rootless(spec, *host_ids)
    process = spec["process"]
    if strings["WorkingDir"]:
        process["cwd"] = strings["WorkingDir"]
    for item in lists["Env"]:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ImageConfigError(f"image config Env entry {item!r} is not NAME=value")
        _set_env(process["env"], name, value)
    args = [*lists["Entrypoint"], *lists["Cmd"]]
    if args:
        process["args"] = args
    passwd = read_file("/etc/passwd")
    group = read_file("/etc/group")
    uid, gid, extra, home = resolve_user(strings["User"], passwd, group)
    process["user"] = {"uid": uid, "gid": gid, **({"additionalGids": extra} if extra else {})}
    if home:
        _set_env(process["env"], "HOME", home)
    for volume in sorted(objects["Volumes"]):
        spec["mounts"].append({"destination": volume, "type": "tmpfs", "source": "none",
                               "options": ["rw", "nosuid", "nodev", "noexec", "relatime"]})
    annotations = dict(objects["Labels"])
    annotations.update({
        "org.opencontainers.image.os": os_name,
        "org.opencontainers.image.architecture": text["architecture"],
        "org.opencontainers.image.author": text["author"],
        "org.opencontainers.image.created": text["created"],
        "org.opencontainers.image.stopSignal": strings["StopSignal"],
        "org.opencontainers.image.exposedPorts": ",".join(sorted(objects["ExposedPorts"])),
    })
    spec["annotations"] = annotations
    return spec

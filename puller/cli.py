"""`puller`: parse arguments, call the library, print. The only module that prints.

Exit status: 0 ok, 1 other failure, 2 usage, 3 not found, 4 authentication, 5 verification,
6 network, 7 unsafe content, 8 not enough disk space, 130 interrupted. Every failure is one line on
stderr; `PULLER_DEBUG=1` adds the traceback of an unexpected one.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

# Only what parsing the command line needs is imported here; each command imports what it uses
# when it runs (`--help` loads no store, config or registry client, not even `typing` or `pathlib`,
# a third of the CLI's own import time; `images` no HTTP stack, no unpacker; tests/puller/test_cli.py
# holds them to it). mypy reads a `TYPE_CHECKING` of any origin as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import TextIO

    from distclient import Credentials, RegistryClient
    from ocispec.manifest import ImageManifest

    from .config import Config
    from .progress import Event, Renderer
    from .space import Reserve
    from .store import ImageRecord, Store

DEFAULT_MAX_UNPACKED = 64 * 1024**3
#: distclient.DEFAULT_JOBS for the help text, which should not load the client's config code to
#: say it (tests/puller/test_cli.py checks that the two agree).
HELP_DEFAULT_JOBS = 4


def _path(text: str) -> Path:
    from pathlib import Path

    return Path(text)


def _size(text: str) -> int:
    from .space import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _reserve(text: str) -> Reserve:
    from .space import parse_reserve

    try:
        return parse_reserve(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


EPILOG = ("Exit status: 0 ok, 1 other failure, 2 usage, 3 not found, 4 authentication, 5 verification, "
          "6 network, 7 unsafe content, 8 not enough disk space, 130 interrupted. Errors are one line on "
          "stderr (PULLER_DEBUG=1: tracebacks).")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", metavar="DIR", help="local store root (default $PULLER_STORE, the config's, "
                        "else ~/.local/share/puller)")
    common.add_argument("--config", metavar="FILE", help="config file (default $PULLER_CONFIG, else "
                        "/etc/puller/config.toml overlaid by ~/.config/puller/config.toml)")
    common.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors and results")
    common.add_argument("--json", action="store_true", help="JSON output (progress events for fetch)")
    parser = argparse.ArgumentParser(prog="puller", parents=[common],
                                     description="Fetch, verify, store and assemble OCI images.",
                                     epilog=EPILOG)
    parser.set_defaults(store=None, config=None, quiet=False, json=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, argument_default=argparse.SUPPRESS)
        for opt in ("--store", "--config"):
            p.add_argument(opt, metavar=opt.strip("-").upper(), default=argparse.SUPPRESS)
        p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS)
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
        return p

    def fetch_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--platform", default=None, help="os/arch[/variant] (default: this machine's)")
        p.add_argument("--jobs", "-j", type=int, default=None, help=f"parallel downloads (default {HELP_DEFAULT_JOBS})")
        p.add_argument("--plain-http", action="store_true", default=False, help="talk plain HTTP to the registry")
        p.add_argument("--min-free-space", type=_reserve, default=None, metavar="SIZE|PCT%",
                       help="stop before the store's filesystem (and the rootfs' or archive's) would have less "
                       "free space than this: 2GiB, 10%%, 0 for no limit (default 5%%, at least 1GiB)")

    p = command("fetch", "fetch an image into the local store")
    p.add_argument("reference")
    fetch_options(p)
    command("images", "list the images in the store")
    p = command("inspect", "show a stored image's manifest, config and layers")
    p.add_argument("reference")
    p = command("rm", "remove images from the store (blobs stay until prune)")
    p.add_argument("references", nargs="+")
    command("prune", "delete blobs that no image references")
    p = command("login", "store credentials for a registry")
    p.add_argument("host")
    p.add_argument("-u", "--username", default=None)
    p.add_argument("-p", "--password", default=None)
    p.add_argument("--password-stdin", action="store_true", default=False)
    p.add_argument("--plain-http", action="store_true", default=False)
    p = command("logout", "forget a registry's credentials")
    p.add_argument("host")
    p = command("push", "push a stored image to a registry (to DEST, default its own reference)")
    p.add_argument("reference")
    p.add_argument("dest", nargs="?", default=None)
    p.add_argument("--plain-http", action="store_true", default=False, help="talk plain HTTP to the registry")

    def unpack_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("reference")
        p.add_argument("dest", type=_path)
        p.add_argument("--bundle", action="store_true", default=False, help="write an OCI runtime bundle")
        p.add_argument("--keep-root-mode", action="store_true", default=False, help="as root without --bundle, "
                       "give DEST the image's mode (default 0700: other users must not reach its setuid files and "
                       "devices)")
        p.add_argument("--max-unpacked-size", type=_size, default=DEFAULT_MAX_UNPACKED, help="refuse layers "
                       "unpacking to more than this (e.g. 20G)")
        fetch_options(p)

    unpack_options(command("pull", "fetch what the store lacks of an image and build its root filesystem, "
                                   "applying each layer as soon as it is downloaded and verified"))
    unpack_options(command("unpack", "build an image's root filesystem (fetching it first when needed)"))
    p = command("export", "write a stored image to an archive (fetching it first when needed)")
    p.add_argument("reference")
    p.add_argument("output", type=_path)
    p.add_argument("--format", choices=("oci-archive", "docker-archive"), default="oci-archive")
    p.add_argument("--max-unpacked-size", type=_size, default=DEFAULT_MAX_UNPACKED, help="docker-archive: refuse "
                   "layers decompressing to more than this (e.g. 20G)")
    fetch_options(p)
    return parser


def one_line(text: str) -> str:
    """`text` as one printable line: registries' error messages may hold newlines or escapes."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


class Output:
    """Where everything goes: results on stdout, progress on stdout (JSON/plain/bars), errors on stderr."""

    def __init__(self, args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> None:
        import threading

        from .progress import JsonRenderer, PlainRenderer, TtyRenderer

        self.out, self.err, self.args = out, err, args
        self._lock = threading.Lock()
        if args.json:
            self.renderer: Renderer = JsonRenderer()
        elif not args.quiet and out.isatty():
            self.renderer = TtyRenderer()
        else:
            self.renderer = PlainRenderer(quiet=args.quiet)

    def emit(self, event: Event) -> None:
        text = self.renderer.handle(event)
        if text:
            with self._lock:
                self.out.write(text)
                self.out.flush()

    def warn(self, message: str) -> None:
        from .progress import Event

        self.emit(Event("warning", {"message": message}))

    def result(self, text: str) -> None:
        self.out.write(text if text.endswith("\n") else text + "\n")

    def error(self, message: str) -> None:
        self.err.write(f"puller: {one_line(message)}\n")


class Context:
    def __init__(self, args: argparse.Namespace, output: Output) -> None:
        from .config import default_store, load_config

        self.args, self.output = args, output
        self.config: Config = load_config(args.config)
        root = args.store or os.environ.get("PULLER_STORE") or self.config.store or str(default_store())
        self._root = _path(root)
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            from .store import Store

            self._store = Store(self._root, self.reserve)
        return self._store

    @property
    def reserve(self) -> Reserve:
        """The free space to leave on the filesystems written to (--min-free-space, else the config's)."""
        flag: Reserve | None = getattr(self.args, "min_free_space", None)
        return flag if flag is not None else self.config.min_free_space

    @property
    def jobs(self) -> int:
        from distclient import DEFAULT_JOBS

        from .errors import UsageError

        jobs = getattr(self.args, "jobs", None) or self.config.jobs or DEFAULT_JOBS
        if jobs < 1:
            raise UsageError("--jobs must be at least 1")
        return jobs

    def client(self, authenticator_overrides: dict[str, Credentials] | None = None) -> RegistryClient:
        from distclient import Authenticator, RegistryClient

        client = RegistryClient(self.config, plain_http=getattr(self.args, "plain_http", False), jobs=self.jobs)
        if authenticator_overrides:
            client.auth = Authenticator(client.transport.token_http, overrides=authenticator_overrides)
        return client


def cmd_fetch(ctx: Context) -> int:
    from .pull import pull
    from .resolve import parse_platform, parse_ref

    ref = parse_ref(ctx.args.reference)
    pull(ctx.client(), ctx.store, ref, parse_platform(ctx.args.platform), ctx.jobs, ctx.output.emit)
    return 0


def cmd_images(ctx: Context) -> int:
    import json

    from .progress import human_size

    rows = ctx.store.summaries()
    if ctx.args.json:
        ctx.output.result(json.dumps(rows, indent=2))
        return 0
    table = [("REFERENCE", "DIGEST", "PLATFORM", "SIZE", "CREATED")]
    table += [(r["reference"], r["digest"].split(":")[1][:12], r["platform"],
               human_size(r["size"]) if r["size"] is not None else "?", r["created"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    lines = ("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table)
    ctx.output.result("\n".join(lines))
    return 0


def cmd_inspect(ctx: Context) -> int:
    import json

    ctx.output.result(json.dumps(ctx.store.inspect(ctx.args.reference), indent=2))
    return 0


def cmd_rm(ctx: Context) -> int:
    for text in ctx.args.references:
        record = ctx.store.remove(text)
        if not ctx.args.quiet:
            ctx.output.result(f"Untagged: {record.reference}")
    return 0


def cmd_push(ctx: Context) -> int:
    from .push import push
    from .resolve import parse_ref

    record = ctx.store.find(ctx.args.reference)
    dest = parse_ref(ctx.args.dest or record.reference)
    push(ctx.client(), ctx.store, record.reference, dest, ctx.output.emit)
    return 0


def cmd_prune(ctx: Context) -> int:
    import json

    from .progress import human_size

    count, size = ctx.store.prune()
    ctx.output.result(json.dumps({"deleted": count, "bytes": size}) if ctx.args.json
                      else f"Deleted {count} blobs, reclaimed {human_size(size)}")
    return 0


def cmd_login(ctx: Context) -> int:
    import getpass

    from distclient import credentials

    from .errors import UsageError

    host = credentials.normalize_host(ctx.args.host)
    user, password = ctx.args.username, ctx.args.password
    if ctx.args.password_stdin:
        if password:
            raise UsageError("--password and --password-stdin are exclusive")
        password = sys.stdin.readline().rstrip("\r\n")
    if user is None:
        if not sys.stdin.isatty():
            raise UsageError("give --username (no terminal to ask on)")
        user = input("Username: ")
    if password is None:
        if not sys.stdin.isatty():
            raise UsageError("give --password or --password-stdin (no terminal to ask on)")
        password = getpass.getpass("Password: ")
    creds = credentials.Credentials(user, password)
    ctx.client({host: creds}).ping(host)
    path = credentials.save(host, creds)
    if not ctx.args.quiet:
        ctx.output.result(f"Login Succeeded (credentials stored in {path})")
    return 0


def cmd_logout(ctx: Context) -> int:
    from distclient import credentials

    host = credentials.normalize_host(ctx.args.host)
    removed = credentials.remove(host)
    if not ctx.args.quiet:
        ctx.output.result(f"Removed login credentials for {host}" if removed else f"Not logged in to {host}")
    return 0


def _stored_image(ctx: Context) -> tuple[ImageRecord, ImageManifest, bytes]:
    from .pull import ensure_image
    from .resolve import parse_platform, parse_ref

    ref = parse_ref(ctx.args.reference)
    platform = parse_platform(ctx.args.platform) if ctx.args.platform else None
    return ensure_image(ctx.client, ctx.store, ctx.args.reference, ref, platform, ctx.jobs, ctx.output.emit)


def cmd_unpack(ctx: Context) -> int:
    from .errors import PullError

    try:
        from .assemble import unpack_image
    except ImportError:
        raise PullError("unpack is not available in this build") from None
    with ctx.store.using():
        record, manifest, config = _stored_image(ctx)
        unpack_image(manifest, config, ctx.store.open_blob, ctx.args.dest,
                     max_unpacked_bytes=ctx.args.max_unpacked_size, bundle=ctx.args.bundle, warn=ctx.output.warn,
                     keep_root_mode=ctx.args.keep_root_mode, min_free=ctx.reserve)
    if not ctx.args.quiet and not ctx.args.json:
        ctx.output.result(f"Unpacked {record.reference} into {ctx.args.dest}")
    return 0


def cmd_pull(ctx: Context) -> int:
    from .pipeline import pull_rootfs
    from .resolve import parse_platform, parse_ref

    ref = parse_ref(ctx.args.reference)
    pull_rootfs(ctx.client, ctx.store, ref, parse_platform(ctx.args.platform), ctx.jobs, ctx.output.emit,
                ctx.args.dest, max_unpacked_bytes=ctx.args.max_unpacked_size, bundle=ctx.args.bundle,
                privileged=os.geteuid() == 0, keep_root_mode=ctx.args.keep_root_mode, min_free=ctx.reserve)
    return 0


def cmd_export(ctx: Context) -> int:
    from .errors import PullError

    try:
        from .assemble import export_image
    except ImportError:
        raise PullError("export is not available in this build") from None
    with ctx.store.using():
        record, manifest, config = _stored_image(ctx)
        export_image(record.reference, manifest.raw, manifest, config, ctx.store.open_blob, ctx.args.output,
                     ctx.args.format, ctx.args.max_unpacked_size, min_free=ctx.reserve)
    if not ctx.args.quiet and not ctx.args.json:
        ctx.output.result(f"Exported {record.reference} to {ctx.args.output} ({ctx.args.format})")
    return 0


COMMANDS: dict[str, Callable[[Context], int]] = {
    "fetch": cmd_fetch, "images": cmd_images, "inspect": cmd_inspect, "rm": cmd_rm, "prune": cmd_prune,
    "push": cmd_push, "login": cmd_login, "logout": cmd_logout, "unpack": cmd_unpack, "export": cmd_export,
    "pull": cmd_pull,
}


def main(argv: list[str] | None = None) -> int:
    """Run one command and return its exit status. As the program itself (`argv` None: `puller`,
    `python -m puller`) it does not return: once the command is done and the output flushed, the
    process ends at once (`os._exit`) rather than tearing down the interpreter, which frees every
    object of every module loaded, ~20 ms of each run. Nothing is lost: every file the commands
    write is closed (and where it matters fsynced) before they return, their threads are done,
    and puller registers no exit handlers."""
    status = run(argv)
    if argv is not None:
        return status
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe: the output is lost either way
        status = status or 1
    os._exit(status)


def run(argv: list[str] | None = None) -> int:
    """`main` without the quick exit: parse `argv` (None: the command line), run the command, map
    its failure to one line on stderr and the exit status."""
    args = build_parser().parse_args(argv)
    output = Output(args)
    from ocispec.errors import OCIValidationError

    from .errors import ClientError, InsufficientSpace
    from .space import NO_SPACE

    try:
        return COMMANDS[args.command](Context(args, output))
    except ClientError as exc:  # the registry client's failures and the puller's own (PullError)
        output.error(exc.message)
        return exc.exit_code
    except OCIValidationError as exc:
        output.error(exc.message)
        return 5
    except KeyboardInterrupt:
        output.error("interrupted")
        return 130
    except BrokenPipeError:
        return 1
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        output.error(f"{exc.strerror or exc}{where}")
        return InsufficientSpace.exit_code if exc.errno in NO_SPACE else 1
    except EOFError:
        output.error("end of input while reading from stdin")
        return 2
    except Exception as exc:  # a bug: still one line (and the traceback only when asked for)
        if os.environ.get("PULLER_DEBUG"):
            import traceback

            traceback.print_exc()
        output.error(f"unexpected error: {type(exc).__name__}: {exc} (PULLER_DEBUG=1 shows where)")
        return 1

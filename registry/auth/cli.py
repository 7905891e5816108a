"""`registry robot create`, `registry user add|remove`, `registry auth keygen`: the auth files from
the command line. The parsers cost nothing to build; the work imports bcrypt and cryptography only
when one of these commands runs."""

from __future__ import annotations

import argparse
import getpass
import secrets
import sys
from pathlib import Path

from ..settings import Settings, SettingsError

COMMANDS = ("robot", "user", "auth")


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    def with_config(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--config", help="YAML settings file (for auth.htpasswd, auth.rules, auth.token.*)")
        return parser

    robot = sub.add_parser("robot", help="robot accounts (for CI)").add_subparsers(dest="action", required=True)
    create = with_config(robot.add_parser("create", help="create a robot account and print its secret once"))
    create.add_argument("name")
    create.add_argument("--repo", action="append", required=True, metavar="PATTERN",
                        help="repository pattern it may access (repeatable), e.g. team-a/app or team-a/*")
    create.add_argument("--actions", default="pull", help="comma-separated: pull, push, delete or * (default pull)")
    create.add_argument("--htpasswd", help="htpasswd file (default: auth.htpasswd)")
    create.add_argument("--rules", help="rules file (default: auth.rules)")
    create.add_argument("--cost", type=int, default=10, help="bcrypt cost (default 10)")

    user = sub.add_parser("user", help="users in the htpasswd file").add_subparsers(dest="action", required=True)
    add = with_config(user.add_parser("add", help="add a user (or change a password with --update)"))
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.add_argument("--update", action="store_true", help="change the password of an existing user")
    add.add_argument("--htpasswd", help="htpasswd file (default: auth.htpasswd)")
    add.add_argument("--cost", type=int, default=10, help="bcrypt cost (default 10)")
    remove = with_config(user.add_parser("remove", help="remove a user"))
    remove.add_argument("name")
    remove.add_argument("--htpasswd", help="htpasswd file (default: auth.htpasswd)")

    auth = sub.add_parser("auth", help="token signing keys").add_subparsers(dest="action", required=True)
    keygen = with_config(auth.add_parser("keygen", help="generate a token signing key and self-signed certificate"))
    keygen.add_argument("--algorithm", choices=("ES256", "RS256"), help="default: auth.token.algorithm")
    keygen.add_argument("--key", help="private key file (default: auth.token.key, else <key_dir>/token-key.pem)")
    keygen.add_argument("--certificate", help="certificate file (default: auth.token.certificate, else next to it)")
    keygen.add_argument("--force", action="store_true", help="replace existing files")


def _path(explicit: str | None, configured: str, what: str) -> Path:
    value = explicit or configured
    if not value:
        raise SettingsError(f"no {what} file: pass --{what} or set auth.{what}")
    return Path(value)


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        try:
            password = getpass.getpass("password: ")
            if getpass.getpass("again: ") != password:
                raise SettingsError("the passwords differ")
        except EOFError:  # no terminal and nothing on standard input
            print(file=sys.stderr)  # end the prompt's line: the error gets a line of its own
            raise SettingsError("no password given (type it when asked, or pass --password-stdin)") from None
    if not password:
        raise SettingsError("empty password")
    return password


def _audit_robot(settings: Settings, name: str, granted: str) -> None:
    """A `robot.create` event for the audit trail (who ran the command is the operator's shell's
    business; the event names the robot and what it may do, never its secret)."""
    import getpass as users

    from storage import Storage

    from ..events import Event
    from ..operations import events_for
    from ..store import storage_driver

    operator = ""
    try:
        operator = users.getuser()
    except (KeyError, OSError):
        pass
    storage = Storage(storage_driver(settings))
    events_for(settings, storage).record([Event("robot.create", user=name, detail=f"{granted}; by {operator or '?'}")])


def run(args: argparse.Namespace, settings: Settings) -> int:
    from .files import locked, write_atomically
    from .keys import CERT_FILE, KEY_FILE, KeyFileError, key_directory, load_signing_key, write_key_pair
    from .rules import RulesError, robot_rule_document
    from .users import NAME, UsersError, remove_user, set_password

    auth = settings.auth
    try:
        if args.command == "robot":
            htpasswd, rules = _path(args.htpasswd, auth.htpasswd, "htpasswd"), _path(args.rules, auth.rules, "rules")
            if not NAME.fullmatch(args.name):
                raise UsersError(f"{args.name!r} is not a valid account name (letters, digits, . _ @ -)")
            actions = [a.strip() for a in args.actions.split(",") if a.strip()]
            document = robot_rule_document(args.name, args.repo, actions, f"robot account {args.name}")
            secret = secrets.token_urlsafe(32)
            set_password(htpasswd, args.name, secret, args.cost)  # first: refuses an existing name
            with locked(rules):
                text = rules.read_text() if rules.exists() else ""
                if text and not text.endswith("\n"):
                    text += "\n"
                write_atomically(rules, (text + document).encode(), 0o644)
            granted = f"{','.join(actions)} on {', '.join(args.repo)}"
            _audit_robot(settings, args.name, granted)
            print(f"robot account {args.name} created with {granted}; "
                  "its secret follows and is shown only this once", file=sys.stderr)
            print(secret)
        elif args.command == "user" and args.action == "add":
            htpasswd = _path(args.htpasswd, auth.htpasswd, "htpasswd")
            set_password(htpasswd, args.name, _password(args), args.cost, create=not args.update, replace=args.update)
            print(f"user {args.name} {'updated' if args.update else 'added'} in {htpasswd}", file=sys.stderr)
        elif args.command == "user" and args.action == "remove":
            htpasswd = _path(args.htpasswd, auth.htpasswd, "htpasswd")
            remove_user(htpasswd, args.name)
            print(f"user {args.name} removed from {htpasswd}", file=sys.stderr)
        elif args.command == "auth" and args.action == "keygen":
            key = Path(args.key or auth.token.key or key_directory(settings) / KEY_FILE)
            cert = Path(args.certificate or auth.token.certificate or key.with_name(CERT_FILE))
            if args.force:
                key.unlink(missing_ok=True)
            if not write_key_pair(key, cert, args.algorithm or auth.token.algorithm, auth.token.issuer):
                raise SettingsError(f"{key} exists already (--force replaces it)")
            signing = load_signing_key(key, cert)
            print(f"key {key}\ncertificate {cert}\nalgorithm {signing.algorithm}\nkid {signing.kid}")
    except (UsersError, RulesError, KeyFileError, OSError) as exc:
        raise SettingsError(str(exc)) from None
    return 0

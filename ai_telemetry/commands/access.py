"""Commands that manage who reads what: token create, user, grant, revoke."""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import timedelta
from typing import Any

from ai_telemetry.commands.common import add_common, migrated_engine, settings_from
from domain.access import AuthorizationUnavailable, Grantee, GranteeKind, GrantError, users
from domain.access.accounts import AccountError, create_token, project_ref
from domain.access.factory import build_access_admin
from domain.access.users import UserError
from domain.database import session_scope
from domain.settings import SettingsError


def cmd_token_create(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    engine = migrated_engine(settings)
    expires = timedelta(days=args.expires_days) if args.expires_days else None
    try:
        with session_scope(engine) as session:
            token = create_token(session, args.user, name=args.name, expires_in=expires)
    except AccountError as exc:
        raise SettingsError(f"--user: {exc}") from None
    finally:
        engine.dispose()
    print(token)
    return 0


def _grant_or_revoke(args: argparse.Namespace, *, grant: bool) -> int:
    settings = settings_from(args)
    engine = migrated_engine(settings)
    try:
        with session_scope(engine) as session:
            project = project_ref(session, args.project)
        kinds: tuple[GranteeKind, ...] = ("group", "user", "client")
        kind, name = next((k, v) for k in kinds if (v := getattr(args, k)))
        grantee = Grantee(kind, name)
        admin = build_access_admin(settings, engine)
        if grant:
            changed = admin.grant(project, grantee, granted_by="cli")
            done, same = f"{grantee} can now read {project}.", f"{grantee} could already read {project}."
        else:
            changed = admin.revoke(project, grantee)
            done, same = f"{grantee} no longer reads {project} directly.", f"{grantee} had no grant on {project}."
        print(done if changed else same)
    except AccountError as exc:
        raise SettingsError(f"--project: {exc}") from None
    except (GrantError, AuthorizationUnavailable) as exc:
        print(f"ai-telemetry: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    return 0


def cmd_grant(args: argparse.Namespace) -> int:
    return _grant_or_revoke(args, grant=True)


def cmd_revoke(args: argparse.Namespace) -> int:
    return _grant_or_revoke(args, grant=False)


def _read_password(args: argparse.Namespace) -> str:
    """From stdin (``--password-stdin``: one line) or typed twice at a prompt; never from the command line."""
    if args.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise SettingsError("--password-stdin: nothing on standard input")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise SettingsError("no terminal to ask for the password: pipe it in with --password-stdin")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Password again: "):
        raise SettingsError("the two passwords differ")
    return first


def cmd_user(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if settings.auth.mode != "local":
        raise SettingsError("AI_TELEMETRY_AUTH_MODE=keycloak: users are managed in Keycloak, not here")
    password = _read_password(args) if args.action in ("create", "set-password") else None
    engine = migrated_engine(settings)
    try:
        with session_scope(engine) as session:
            message = _user_action(session, args, password)
    except UserError as exc:
        print(f"ai-telemetry: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(message)
    return 0


def _user_action(session: Any, args: argparse.Namespace, password: str | None) -> str:
    if args.action == "list":
        rows = [
            f"{u.username:<24} {'admin' if u.is_admin else 'user':<5} {'disabled' if u.disabled else 'enabled':<8} "
            f"{u.tokens:>3} tokens  {u.email or '-':<32} {u.display_name}"
            for u in users.list_users(session)
        ]
        return "\n".join(rows) if rows else "no local users (create one with: ai-telemetry user create NAME --admin)"
    if args.action == "create":
        assert password is not None
        user = users.create_user(
            session,
            args.username,
            password=password,
            display_name=args.display_name,
            email=args.email,
            is_admin=args.admin,
        )
        return f"created {'administrator' if user.is_admin else 'user'} {user.username}"
    if args.action == "set-password":
        assert password is not None
        users.set_password(session, args.username, password)
        return f"new password for {args.username}; their open logins ended"
    if args.action in ("disable", "enable"):
        changed = users.set_disabled(session, args.username, args.action == "disable")
        return f"{args.username} {args.action}d" if changed else f"{args.username} was already {args.action}d"
    users.delete_user(session, args.username)
    return f"deleted {args.username} with their tokens and grants"


def _token_parser(commands: Any) -> None:
    token = commands.add_parser("token", help="personal access tokens (local authorization mode)")
    token_commands = token.add_subparsers(title="token commands", required=True, metavar="COMMAND")
    create = token_commands.add_parser("create", help="print a new API token for a user")
    add_common(create)
    create.add_argument("--user", required=True, help="user name, e.g. alice")
    create.add_argument("--name", default="cli", help="a label for the token")
    create.add_argument("--expires-days", type=int, help="days until it expires (default: never)")
    create.set_defaults(handler=cmd_token_create)


def _user_parser(commands: Any) -> None:
    user = commands.add_parser(
        "user",
        help="local users (local authorization mode): create, list, set-password, disable, enable, delete",
        description="Local users and administrators. Passwords are typed at a prompt or piped in with "
        "--password-stdin, never given as an argument.",
    )
    actions = user.add_subparsers(title="user commands", required=True, metavar="COMMAND", dest="action")
    texts = {
        "create": "create a user (--admin: an administrator)",
        "list": "list the users",
        "set-password": "give a user a new password (ends their open logins)",
        "disable": "stop a user from logging in or using their tokens",
        "enable": "let a disabled user in again",
        "delete": "delete a user with their tokens and grants",
    }
    for action, text in texts.items():
        command = actions.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        add_common(command)
        if action != "list":
            command.add_argument("username", help="user name, e.g. alice")
        if action in ("create", "set-password"):
            command.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
        if action == "create":
            command.add_argument("--admin", action="store_true", help="an administrator (reads everything)")
            command.add_argument("--display-name", help="the name shown on the site (default: the user name)")
            command.add_argument("--email", help="where notices to the user go")
        command.set_defaults(handler=cmd_user)


def add_commands(commands: Any) -> None:
    _token_parser(commands)
    _user_parser(commands)
    for verb, handler, text in (
        ("grant", cmd_grant, "let a group, user or API client read a research project"),
        ("revoke", cmd_revoke, "take a direct grant on a research project away"),
    ):
        command = commands.add_parser(
            verb,
            help=text,
            description=f"{text[0].upper()}{text[1:]}: local "
            "grants in the database, or Keycloak group membership (AI_TELEMETRY_AUTH_MODE).",
        )
        add_common(command)
        command.add_argument("--project", required=True, metavar="[HUB/]CLUSTER/NAMESPACE", help="the project")
        who = command.add_mutually_exclusive_group(required=True)
        who.add_argument("--group", help="a Keycloak group (team), e.g. ml-team-a")
        who.add_argument("--user", help="a user name, e.g. alice")
        who.add_argument("--client", help="an API client id (its service account), e.g. ml-team-a-api")
        command.set_defaults(handler=handler)

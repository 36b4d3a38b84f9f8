"""Local users (local authorization mode): create, list, set a password, disable, enable, delete.

The CLI (``ai-telemetry user ...``) and the admin page (``/admin/users``) both call these. Input is
checked before anything is written and a refusal says why (:class:`UserError`). A disabled user can
neither log in nor use their tokens; disabling, deleting or a new password also ends their open login
sessions. The last enabled administrator can be neither disabled nor deleted, so an installation cannot
lock itself out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func
from sqlmodel import Session, col, select

from domain.access.local import USER_PREFIX
from domain.access.secrets import hash_password
from domain.models import AccessGrant, ApiToken, LocalUser, LoginSession

USERNAME = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")
"""Lower-case letters, digits, dot, dash and underscore, 1 to 64 characters (grants name users ``user:NAME``)."""
PASSWORD_MIN = 12
PASSWORD_MAX = 1024
EMAIL_MAX = 254
_EMAIL_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_DOMAIN_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


class UserError(ValueError):
    """A user change that cannot be made; the message says why."""


def normalise_email(value: str | None) -> str | None:
    """A deliverable-looking address (RFC 5321 dot-atom local part, a dotted DNS domain), domain lower-cased.

    Notices to researchers will be sent to it, so anything else is refused rather than stored: quoted local
    parts, IP literals, display names, whitespace and control characters included.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    local, sep, domain = text.rpartition("@")
    domain = domain.lower().rstrip(".") if sep else ""
    labels = domain.split(".")
    if (
        not sep
        or len(text) > EMAIL_MAX
        or len(local) > 64
        or not _EMAIL_LOCAL.fullmatch(local)
        or len(labels) < 2
        or not all(_DOMAIN_LABEL.fullmatch(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise UserError(f"{value!r} is not an e-mail address like name@example.org")
    return f"{local}@{domain}"


def check_password(password: str) -> str:
    if len(password) < PASSWORD_MIN:
        raise UserError(f"the password must have at least {PASSWORD_MIN} characters")
    if len(password) > PASSWORD_MAX:
        raise UserError(f"the password may have at most {PASSWORD_MAX} characters")
    if password != password.strip() or any(ord(c) < 0x20 or ord(c) == 0x7F for c in password):
        raise UserError("the password may not start or end with spaces nor hold control characters")
    return password


@dataclass(frozen=True)
class UserRead:
    id: int
    username: str
    display_name: str
    email: str | None
    is_admin: bool
    disabled: bool
    created_at: datetime
    tokens: int


def _user(session: Session, username: str) -> LocalUser:
    user = session.exec(select(LocalUser).where(LocalUser.username == username)).first()
    if user is None:
        raise UserError(f"no such user: {username}")
    return user


def _end_sessions(session: Session, username: str) -> None:
    session.exec(delete(LoginSession).where(col(LoginSession.subject) == USER_PREFIX + username))


def _guard_last_admin(session: Session, user: LocalUser, doing: str) -> None:
    if not user.is_admin or user.disabled:
        return
    others = session.exec(
        select(func.count())
        .select_from(LocalUser)
        .where(col(LocalUser.is_admin), ~col(LocalUser.disabled), col(LocalUser.id) != user.id)
    ).one()
    if not others:
        raise UserError(f"{user.username} is the last enabled administrator: cannot {doing} them")


def create_user(
    session: Session,
    username: str,
    *,
    password: str,
    display_name: str | None = None,
    email: str | None = None,
    is_admin: bool = False,
) -> LocalUser:
    if not USERNAME.fullmatch(username):
        raise UserError(
            f"{username!r}: user names are lower-case letters, digits, '.', '-' and '_' (1 to 64 characters)"
        )
    display = (display_name or username).strip()
    if not display or len(display) > 128 or any(ord(c) < 0x20 for c in display):
        raise UserError("the display name must have 1 to 128 printable characters")
    address = normalise_email(email)
    check_password(password)
    if session.exec(select(LocalUser).where(LocalUser.username == username)).first() is not None:
        raise UserError(f"user {username} already exists")
    user = LocalUser(
        username=username,
        display_name=display,
        email=address,
        password_hash=hash_password(password),
        is_admin=is_admin,
    )
    session.add(user)
    session.flush()
    return user


def list_users(session: Session) -> list[UserRead]:
    tokens = dict(session.exec(select(col(ApiToken.user_id), func.count()).group_by(col(ApiToken.user_id))).all())
    return [
        UserRead(
            id=u.id or 0,
            username=u.username,
            display_name=u.display_name,
            email=u.email,
            is_admin=u.is_admin,
            disabled=u.disabled,
            created_at=u.created_at,
            tokens=int(tokens.get(u.id or 0, 0)),
        )
        for u in session.exec(select(LocalUser).order_by(LocalUser.username)).all()
    ]


def set_password(session: Session, username: str, password: str) -> None:
    """A new password; the user's open login sessions end (their tokens stay: revoke those by deleting)."""
    user = _user(session, username)
    user.password_hash = hash_password(check_password(password))
    session.add(user)
    _end_sessions(session, username)


def set_disabled(session: Session, username: str, disabled: bool) -> bool:
    """Disable (or enable) a user; False when it already was. Disabling ends their login sessions."""
    user = _user(session, username)
    if user.disabled == disabled:
        return False
    if disabled:
        _guard_last_admin(session, user, "disable")
        _end_sessions(session, username)
    user.disabled = disabled
    session.add(user)
    return True


def delete_user(session: Session, username: str) -> None:
    """Delete a user with their tokens, grants and login sessions."""
    user = _user(session, username)
    _guard_last_admin(session, user, "delete")
    session.exec(delete(ApiToken).where(col(ApiToken.user_id) == user.id))
    session.exec(delete(AccessGrant).where(col(AccessGrant.principal) == USER_PREFIX + username))
    _end_sessions(session, username)
    session.delete(user)

"""Who may review: users with roles, their passwords, their signed-in sessions.

Accounts live in the store itself (``users``, ``user_sessions``; migration 0010), so a plant
database shared by several stations has one list of reviewers. Roles: ``viewer`` reads,
``reviewer`` also writes reviews, ``admin`` also manages users (``inspector users``).

- Passwords are hashed with Argon2id by argon2-cffi (:class:`argon2.PasswordHasher`, its
  defaults, PHC-format strings); a hash made under older parameters is replaced on the next
  sign-in (``check_needs_rehash``). A password never reaches argv, a log or the database.
- Signing in costs the same time whether the name exists or not (a dummy hash is verified for
  an unknown name), and :class:`SignInThrottle` refuses a name or an address after repeated
  failures for a while.
- A session is a random token (``secrets.token_urlsafe``) in an HttpOnly cookie; the database
  keeps only its SHA-256 and a per-session CSRF token that every write must send back.

Written through a :class:`~inspector_core.store.Store` opened without migrating
(:func:`inspector_core.qa.review.open_writer`); nothing here changes the schema.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, delete, insert, select, update

from inspector_core.store import Store, utcnow
from inspector_core.store.review_records import ROLES, User, UserSession

SESSION_HOURS = 12.0
"""How long a sign-in lasts (a shift and a half)."""
MIN_PASSWORD = 8
NAME_PATTERN = r"[A-Za-z0-9._@-]{1,100}"

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class AccountError(ValueError):
    """A request about accounts that cannot be done; the message names the user and the remedy."""


@dataclasses.dataclass(frozen=True)
class Account:
    """A user as the dashboard and the commands see it (never with the hash)."""

    id: int
    name: str
    role: str
    created_at: datetime
    disabled_at: datetime | None

    @property
    def can_review(self) -> bool:
        return self.disabled_at is None and self.role in ("reviewer", "admin")


@dataclasses.dataclass(frozen=True)
class SignedIn:
    """A live session: who, and the CSRF token its writes must carry."""

    account: Account
    csrf: str
    expires_at: datetime


def _account(u: Any) -> Account:
    """From a ``users`` row (or any row with its columns)."""
    return Account(u.id, u.name, u.role, u.created_at, u.disabled_at)


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(f"role {role!r}: must be one of {', '.join(ROLES)}")
    return role


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password is too short: at least {MIN_PASSWORD} characters")
    return password


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# ---------------------------------------------------------------------------- users


def add_user(store: Store, name: str, role: str, password: str) -> Account:
    """Create user ``name``; refuses a name already taken (the existing user is kept)."""
    import re

    if not re.fullmatch(NAME_PATTERN, name):
        raise AccountError(f"user name {name!r}: use 1-100 letters, digits and . _ @ - (no spaces)")
    check_role(role)
    hashed = _hasher.hash(check_password(password))
    with store.transaction(write=True) as conn:
        if conn.scalar(select(User.id).where(User.name == name)) is not None:
            raise AccountError(f"user {name!r} exists already; change it with `inspector users set {name} ...`")
        uid = conn.execute(
            insert(User)
            .values(name=name, role=role, password_hash=hashed, created_at=utcnow(), disabled_at=None)
            .returning(User.id)
        ).scalar_one()
        row = conn.execute(select(User).where(User.id == uid)).one()
    return _account(row)


def users(store: Store) -> list[Account]:
    with store.transaction() as conn:
        return [_account(r) for r in conn.execute(select(User).order_by(User.name))]


def find_user(conn: Connection, name: str) -> Account | None:
    row = conn.execute(select(User).where(User.name == name)).first()
    return None if row is None else _account(row)


def user(store: Store, name: str) -> Account:
    """The account ``name``; :class:`AccountError` naming ``inspector users add`` if there is none."""
    with store.transaction() as conn:
        got = find_user(conn, name)
    if got is None:
        raise AccountError(f"no user {name!r}; create one with `inspector users add {name} --role reviewer`")
    return got


def update_user(
    store: Store,
    name: str,
    *,
    role: str | None = None,
    password: str | None = None,
    disabled: bool | None = None,
) -> Account:
    """Change a user's role, password or whether it may sign in. A new password or disabling
    ends the user's sessions."""
    values: dict[str, object] = {}
    if role is not None:
        values["role"] = check_role(role)
    if password is not None:
        values["password_hash"] = _hasher.hash(check_password(password))
    if disabled is not None:
        values["disabled_at"] = utcnow() if disabled else None
    with store.transaction(write=True) as conn:
        got = find_user(conn, name)
        if got is None:
            raise AccountError(f"no user {name!r}; create one with `inspector users add {name} --role reviewer`")
        if values:
            conn.execute(update(User).where(User.id == got.id).values(**values))
        if password is not None or disabled:
            conn.execute(delete(UserSession).where(UserSession.user_id == got.id))
        row = conn.execute(select(User).where(User.id == got.id)).one()
    return _account(row)


# ---------------------------------------------------------------------------- signing in


def authenticate(store: Store, name: str, password: str) -> Account | None:
    """The account if ``password`` is ``name``'s and the account is enabled, else ``None``.
    Takes one Argon2 verification either way (no answer comes faster for an unknown name)."""
    with store.transaction() as conn:
        row = conn.execute(select(User).where(User.name == name)).first()
    stored = row.password_hash if row is not None else _DUMMY_HASH
    ok = False
    with contextlib.suppress(VerificationError, InvalidHashError):  # a wrong password, or a hash not argon2's
        ok = _hasher.verify(stored, password)
    if row is None or not ok or row.disabled_at is not None:
        return None
    if _hasher.check_needs_rehash(stored):
        with store.transaction(write=True) as conn:
            conn.execute(update(User).where(User.id == row.id).values(password_hash=_hasher.hash(password)))
    return _account(row)


def start_session(store: Store, account: Account, *, hours: float = SESSION_HOURS) -> tuple[str, SignedIn]:
    """A new session for ``account``: ``(cookie token, session)``. Expired sessions are swept."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    now = utcnow()
    expires = now + timedelta(hours=hours)
    with store.transaction(write=True) as conn:
        conn.execute(delete(UserSession).where(UserSession.expires_at < now))
        conn.execute(
            insert(UserSession).values(
                id=_token_digest(token), user_id=account.id, csrf=csrf, created_at=now, expires_at=expires
            )
        )
    return token, SignedIn(account, csrf, expires)


def session(store: Store, token: str | None) -> SignedIn | None:
    """The live session of cookie ``token``: not expired, its user enabled; else ``None``."""
    if not token or len(token) > 200:
        return None
    with store.transaction() as conn:
        row = conn.execute(
            select(
                User.id,
                User.name,
                User.role,
                User.created_at,
                User.disabled_at,
                UserSession.csrf,
                UserSession.expires_at,
            )
            .join(User, User.id == UserSession.user_id)
            .where(UserSession.id == _token_digest(token))
        ).first()
    if row is None or row.expires_at < utcnow() or row.disabled_at is not None:
        return None
    return SignedIn(_account(row), row.csrf, row.expires_at)


def end_session(store: Store, token: str | None) -> None:
    if token:
        with store.transaction(write=True) as conn:
            conn.execute(delete(UserSession).where(UserSession.id == _token_digest(token)))


def csrf_ok(signed_in: SignedIn, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(signed_in.csrf.encode(), (given or "").encode())


class SignInThrottle:
    """Refuses sign-in for a name or a client address that failed ``limit`` times within
    ``window_s`` seconds, until the oldest of those failures is ``window_s`` old. In memory, per
    dashboard process: it slows guessing, the Argon2 cost does the rest."""

    def __init__(self, limit: int = 5, window_s: float = 300.0) -> None:
        self.limit = limit
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        while q and now - q[0] > self.window_s:
            q.popleft()
        return q

    def wait_s(self, *keys: str) -> float:
        """Seconds until these keys may try again (0: now)."""
        now = time.monotonic()
        with self._lock:
            waits = [self.window_s - (now - q[0]) for k in keys if len(q := self._recent(k, now)) >= self.limit]
        return max(waits, default=0.0)

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._failures) > 10_000:  # names sprayed at it: forget those whose failures are old
                for k in [k for k in self._failures if not self._recent(k, now)]:
                    del self._failures[k]
            for k in keys:
                self._recent(k, now).append(now)

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for k in keys:
                self._failures.pop(k, None)

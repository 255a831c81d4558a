"""Who may use the console: its password file, login sessions and the failed-login brake.

The password file (``[web] users_file``, written by ``hypnolum console
--add-user NAME``) holds one user a line::

    name:role:scrypt$16384$8$1$<salt, base64>$<hash, base64>

``role`` is ``operator`` (sees and steers) or ``viewer`` (sees). Passwords are
hashed with scrypt (Python's hashlib, memory-hard) and a random 16-byte salt
per user; the file is written 0600, replaced atomically. It is read again when
it changes, so adding a user needs no restart. A line that cannot be read is
reported with its line number and only that user cannot log in.

A login is a random session token in an HttpOnly, SameSite=Strict cookie,
kept in memory: restarting the console logs everyone out.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

ROLES = ("operator", "viewer")
NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,32}$"
_N, _R, _P = 2**14, 8, 1  # scrypt cost: ~16 MiB, ~50 ms a check
_DKLEN = 32
_MAX_PASSWORD = 1024
MIN_PASSWORD = 8


class UsersFileError(ValueError):
    """A users file that cannot be written, or a user that cannot be added."""


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=_DKLEN, maxmem=64 * 1024 * 1024)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, encoded: str) -> bool:
    """True if ``password`` matches ``encoded`` (a hash_password string); False for anything unreadable."""
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt" or len(password) > _MAX_PASSWORD:
            return False
        want = base64.b64decode(digest, validate=True)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt, validate=True), n=int(n), r=int(r),
                             p=int(p), dklen=len(want), maxmem=64 * 1024 * 1024)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


_DUMMY = hash_password(secrets.token_hex(8))  # checked for unknown names: the answer takes as long


@dataclass(frozen=True)
class User:
    name: str
    role: str
    hashed: str


def parse_users(text: str, source: str) -> tuple[dict[str, User], list[str]]:
    """(users by name, problems "source:line N: ..."): a bad line costs only its own user."""
    users: dict[str, User] = {}
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) != 3:
            problems.append(f"{source}:line {number}: expected name:role:hash")
        elif not re.fullmatch(NAME_PATTERN, parts[0]):
            problems.append(f"{source}:line {number}: user name {parts[0][:40]!r} does not match {NAME_PATTERN}")
        elif parts[1] not in ROLES:
            problems.append(f"{source}:line {number}: role {parts[1][:20]!r} is not one of {', '.join(ROLES)}")
        elif not parts[2].startswith("scrypt$") or parts[2].count("$") != 5:
            problems.append(f"{source}:line {number}: the hash is not a scrypt hash made by --add-user")
        elif parts[0] in users:
            problems.append(f"{source}:line {number}: user {parts[0]!r} again (the first line counts)")
        else:
            users[parts[0]] = User(parts[0], parts[1], parts[2])
    return users, problems


def add_user(path: Path, name: str, role: str, password: str) -> bool:
    """Add ``name`` (or replace its line); True if it replaced one. Writes 0600, atomically."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise UsersFileError(f"user name {name!r} does not match {NAME_PATTERN}")
    if role not in ROLES:
        raise UsersFileError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD or len(password) > _MAX_PASSWORD:
        raise UsersFileError(f"the password must have {MIN_PASSWORD}..{_MAX_PASSWORD} characters")
    try:
        old = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    except OSError as exc:
        raise UsersFileError(f"{path}: {exc.strerror or exc}") from None
    kept = [line for line in old if line.split(":", 1)[0] != name]
    lines = kept + [f"{name}:{role}:{hash_password(password)}"]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as f:  # mkstemp makes it 0600
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise UsersFileError(f"{path}: {exc.strerror or exc}") from None
    return len(kept) != len(old)


class Users:
    """The password file, read again whenever it changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[str] = []
        self._users: dict[str, User] = {}
        self._seen: tuple[float, int] | None = None

    def _refresh(self) -> None:
        try:
            st = self.path.stat()
            seen = (st.st_mtime, st.st_size)
            if seen == self._seen:
                return
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self._users, self._seen = {}, None
            self.problems = [f"{self.path}: {getattr(exc, 'strerror', None) or exc}"]
            return
        self._users, self.problems = parse_users(text, str(self.path))
        self._seen = seen

    def count(self) -> int:
        self._refresh()
        return len(self._users)

    def verify(self, name: str, password: str) -> User | None:
        """The user if the password is right (blocking: ~50 ms of scrypt; call it in a thread)."""
        self._refresh()
        user = self._users.get(name)
        ok = check_password(password, user.hashed if user else _DUMMY)
        return user if ok and user is not None else None


@dataclass
class Session:
    token: str
    user: str
    role: str
    expires: float  # time.monotonic()

    @property
    def operator(self) -> bool:
        return self.role == "operator"


class Sessions:
    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._by_token: dict[str, Session] = {}

    def create(self, user: str, role: str) -> Session:
        self._sweep()
        session = Session(secrets.token_urlsafe(32), user, role, time.monotonic() + self.ttl_s)
        self._by_token[session.token] = session
        return session

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        session = self._by_token.get(token)
        if session is None or session.expires < time.monotonic():
            self._by_token.pop(token, None)
            return None
        return session

    def drop(self, token: str | None) -> None:
        if token:
            self._by_token.pop(token, None)

    def _sweep(self) -> None:
        now = time.monotonic()
        for token in [t for t, s in self._by_token.items() if s.expires < now]:
            del self._by_token[token]


class Throttle:
    """At most ``limit`` failed logins per client address within ``window_s``."""

    def __init__(self, limit: int = 5, window_s: float = 60.0) -> None:
        self.limit = limit
        self.window_s = window_s
        self.refused = 0
        self._failures: dict[str, deque[float]] = {}

    def wait_s(self, key: str) -> float:
        """0 if ``key`` may try now, else the seconds until it may."""
        recent = self._recent(key)
        if len(recent) < self.limit:
            return 0.0
        self.refused += 1
        return max(0.1, recent[0] + self.window_s - time.monotonic())

    def failed(self, key: str) -> None:
        self._recent(key).append(time.monotonic())

    def _recent(self, key: str) -> deque[float]:
        if len(self._failures) > 10_000:  # many addresses: forget the quiet ones
            self._failures = {k: v for k, v in self._failures.items() if v}
        recent = self._failures.setdefault(key, deque(maxlen=self.limit))
        cutoff = time.monotonic() - self.window_s
        while recent and recent[0] < cutoff:
            recent.popleft()
        return recent

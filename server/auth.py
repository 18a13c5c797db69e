"""Accounts, sessions and the login throttle.

Passwords are stored as Argon2id hashes (pwdlib). A login sets a random session token in an HttpOnly,
SameSite=Strict cookie; the database keeps only its SHA-256, so a stolen database holds no usable
session. After ``max_failures`` wrong passwords for one account or from one address within
``window_s``, further attempts are refused for ``lockout_s`` without even checking the password.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from server.models import User
from server.repository import Repository

ROLES = ("clinician", "engineer")
COOKIE = "pw_session"
_hasher = PasswordHash((Argon2Hasher(),))
#: Compared against when the user does not exist, so a wrong name costs the same time as a wrong password.
_DUMMY_HASH = _hasher.hash("not a password")


def hash_password(password: str) -> str:
    if len(password) < 8:
        raise ValueError("a password needs at least 8 characters")
    return _hasher.hash(password)


def check_password(user: User | None, password: str) -> bool:
    if user is None:
        _hasher.verify(password, _DUMMY_HASH)
        return False
    return _hasher.verify(password, user.password_hash)


def add_user(repo: Repository, name: str, role: str, password: str) -> User:
    if role not in ROLES:
        raise ValueError(f"role {role!r}: use one of {ROLES}")
    if not name or len(name) > 64 or not name.isprintable():
        raise ValueError("a user name is 1-64 printable characters")
    return repo.add_user(name, role, hash_password(password))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_session(repo: Repository, user: User, lifetime: dt.timedelta) -> str:
    token = secrets.token_urlsafe(32)
    repo.add_session(token_hash(token), user, lifetime)
    return token


@dataclass(frozen=True)
class ThrottlePolicy:
    max_failures: int = 5
    window_s: float = 300.0
    lockout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_failures < 1 or self.window_s <= 0 or self.lockout_s <= 0:
            raise ValueError("max_failures >= 1, window_s and lockout_s > 0")


class LoginThrottle:
    """Failed attempts per key (an account name, a client address) in a sliding window."""

    def __init__(self, policy: ThrottlePolicy = ThrottlePolicy()) -> None:
        self.policy = policy
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._locked_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def locked(self, *keys: str) -> bool:
        now = time.monotonic()
        with self._lock:
            return any(self._locked_until.get(k, 0.0) > now for k in keys)

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for k in keys:
                q = self._failures[k]
                q.append(now)
                while q and q[0] < now - self.policy.window_s:
                    q.popleft()
                if len(q) >= self.policy.max_failures:
                    self._locked_until[k] = now + self.policy.lockout_s
                    q.clear()

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for k in keys:
                self._failures.pop(k, None)

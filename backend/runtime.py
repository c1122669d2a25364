"""What services need from the running app: the clock, the keys, the password hasher, settings."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher, Type
from flask import current_app

from backend.clock import Clock
from backend.keys import KeyRing


@dataclass(frozen=True)
class LoginLimits:
    """How many failed logins lock an account or an address, over what window."""

    window_seconds: int
    max_per_account: int
    max_per_address: int


@dataclass(frozen=True)
class Runtime:
    """The dependencies services take explicitly, built once per app."""

    clock: Clock
    keys: KeyRing
    passwords: PasswordHasher
    login_limits: LoginLimits
    access_token_seconds: int
    refresh_token_seconds: int
    checkpoint_dir: Path
    # Where security keys may be used (`VIGIL_WEBAUTHN_ORIGINS`); empty: where a request arrives.
    webauthn_origins: tuple[str, ...]

    @cached_property
    def dummy_password_hash(self) -> str:
        """Return a hash to verify against when the user is unknown, so both paths cost alike."""
        return self.passwords.hash(secrets.token_hex(16))


def build_runtime(config: dict[str, Any], clock: Clock, keys: KeyRing) -> Runtime:
    """Assemble the runtime from typed config."""
    return Runtime(
        clock=clock,
        keys=keys,
        passwords=PasswordHasher(
            time_cost=config["ARGON2_TIME_COST"],
            memory_cost=config["ARGON2_MEMORY_KIB"],
            parallelism=config["ARGON2_PARALLELISM"],
            type=Type.ID,
        ),
        login_limits=LoginLimits(
            window_seconds=config["LOGIN_WINDOW_SECONDS"],
            max_per_account=config["LOGIN_MAX_PER_ACCOUNT"],
            max_per_address=config["LOGIN_MAX_PER_ADDRESS"],
        ),
        access_token_seconds=config["ACCESS_TOKEN_SECONDS"],
        refresh_token_seconds=config["REFRESH_TOKEN_SECONDS"],
        checkpoint_dir=Path(config["CHECKPOINT_DIR"]),
        webauthn_origins=tuple(config["WEBAUTHN_ORIGINS"]),
    )


def runtime() -> Runtime:
    """Return the current app's runtime."""
    return current_app.extensions["vigil.runtime"]

"""Read Vigil's configuration from the environment, in one place."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Setting:
    """Describe one environment variable: its config key, type and default."""

    env: str
    key: str
    default: Any
    parse: type = str
    doc: str = ""


def _parse_bool(raw: str) -> bool:
    return raw.strip().lower() in {"1", "true", "yes", "on"}


# A web origin: a scheme, a host and perhaps a port, nothing after.
ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")


def _parse_origins(raw: str) -> tuple[str, ...]:
    return tuple(origin.strip().rstrip("/") for origin in raw.split(",") if origin.strip())


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _networks_valid(networks: tuple[str, ...]) -> bool:
    try:
        for network in networks:
            ipaddress.ip_network(network)
    except ValueError:
        return False
    return True


SETTINGS: tuple[Setting, ...] = (
    Setting("VIGIL_ENV", "VIGIL_ENV", "development", str,
            "`development` generates missing keys; `production` refuses to start without them."),
    Setting("DATABASE_URL", "DATABASE_URL", None, str,
            "SQLAlchemy URL; defaults to a SQLite file `vigil.sqlite3` in the instance folder."),
    Setting("VIGIL_SECRET_KEY", "SECRET_KEY", None, str,
            "Base64 key (≥ 32 bytes) that signs access tokens."),
    Setting("VIGIL_SIGNING_KEY", "SIGNING_KEY", None, str,
            "Base64 raw 32-byte Ed25519 private key: the server's signature (ledger entries and "
            "checkpoints)."),
    Setting("VIGIL_RETIRED_SIGNING_KEYS", "RETIRED_SIGNING_KEYS", None, str,
            "Base64 raw 32-byte Ed25519 public keys of earlier signing keys, comma-separated: "
            "what they signed still verifies after a rotation."),
    Setting("VIGIL_PHI_KEYS", "PHI_KEYS", None, str,
            "PHI encryption keys, `kid:base64key[,kid:base64key…]`; 32-byte AES-GCM keys."),
    Setting("VIGIL_PHI_ACTIVE_KEY", "PHI_ACTIVE_KEY", None, str,
            "Key id from `VIGIL_PHI_KEYS` that encrypts new values (default: the first)."),
    Setting("VIGIL_BLIND_INDEX_KEY", "BLIND_INDEX_KEY", None, str,
            "Base64 HMAC key (≥ 32 bytes) for exact-match lookups such as MRN."),
    Setting("VIGIL_ACCESS_TOKEN_SECONDS", "ACCESS_TOKEN_SECONDS", 900, int,
            "Access-token lifetime; at most 900 (15 min)."),
    Setting("VIGIL_REFRESH_TOKEN_SECONDS", "REFRESH_TOKEN_SECONDS", 30 * 86400, int,
            "Refresh-token lifetime (a phone may be offline for days)."),
    Setting("VIGIL_MAX_REQUEST_BYTES", "MAX_CONTENT_LENGTH", 1_048_576, int,
            "Largest accepted request body; larger bodies get 413."),
    Setting("VIGIL_LOGIN_WINDOW_SECONDS", "LOGIN_WINDOW_SECONDS", 900, int,
            "Window over which failed logins are counted, and the lockout length."),
    Setting("VIGIL_LOGIN_MAX_PER_ACCOUNT", "LOGIN_MAX_PER_ACCOUNT", 5, int,
            "Failed logins for one account within the window before it is locked."),
    Setting("VIGIL_LOGIN_MAX_PER_ADDRESS", "LOGIN_MAX_PER_ADDRESS", 20, int,
            "Failed logins from one address within the window before it is locked."),
    Setting("VIGIL_ARGON2_TIME_COST", "ARGON2_TIME_COST", 3, int, "argon2id passes."),
    Setting("VIGIL_ARGON2_MEMORY_KIB", "ARGON2_MEMORY_KIB", 65536, int, "argon2id memory (KiB)."),
    Setting("VIGIL_ARGON2_PARALLELISM", "ARGON2_PARALLELISM", 4, int, "argon2id lanes."),
    Setting("VIGIL_CHECKPOINT_DIR", "CHECKPOINT_DIR", None, str,
            "Where signed ledger checkpoints are appended (default `<instance>/checkpoints`); "
            "keep it off the database's disk."),
    Setting("VIGIL_SYNC_MAX_PUSH_RECORDS", "SYNC_MAX_PUSH_RECORDS", 5000, int,
            "Most records one sync push may carry; more get 413 (bytes are capped by "
            "`VIGIL_MAX_REQUEST_BYTES`)."),
    Setting("VIGIL_TRUST_PROXY", "TRUST_PROXY", False, _parse_bool,
            "Trust one proxy's `X-Forwarded-For` (the client's address) and "
            "`X-Forwarded-Proto` (TLS, which turns HSTS on); set only behind such a proxy."),
    Setting("VIGIL_CONSOLE_IDLE_SECONDS", "CONSOLE_IDLE_SECONDS", 900, int,
            "A console session left idle this long is signed out (HIPAA 164.312(a)(2)(iii))."),
    Setting("VIGIL_CONSOLE_SESSION_SECONDS", "CONSOLE_SESSION_SECONDS", 12 * 3600, int,
            "A console session ends this long after sign-in, however active."),
    Setting("VIGIL_WEBAUTHN_ORIGINS", "WEBAUTHN_ORIGINS", (), _parse_origins,
            "The origins where security keys are used, comma-separated (e.g. "
            "`https://vigil.example.org`); the relying party id is the origin's host name. "
            "Empty: the origin each request arrives at."),
    Setting("VIGIL_LOG_FORMAT", "LOG_FORMAT", None, str,
            "`json` (one JSON object per line, for a log shipper) or `text` (for a terminal); "
            "default `json` when `VIGIL_ENV=production`, else `text`."),
    Setting("VIGIL_LOG_LEVEL", "LOG_LEVEL", "INFO", str.upper,
            "`DEBUG`, `INFO`, `WARNING` or `ERROR`; INFO logs one line per request and job run."),
    Setting("VIGIL_METRICS_TOKEN", "METRICS_TOKEN", None, str,
            "Bearer token (≥ 32 characters) a scraper sends to `/metrics`; with it set, only the "
            "token or `VIGIL_METRICS_NETWORKS` admit a scrape. Neither set: this host only."),
    Setting("VIGIL_METRICS_NETWORKS", "METRICS_NETWORKS", (), _parse_list,
            "Networks that may scrape `/metrics` without the token, comma-separated CIDRs (e.g. "
            "`10.0.5.0/24,fd00::/64`)."),
)

KEY_SETTINGS = ("SECRET_KEY", "SIGNING_KEY", "PHI_KEYS", "BLIND_INDEX_KEY")


def instance_path(environ: Mapping[str, str] | None = None) -> Path:
    """Return the instance folder: `VIGIL_INSTANCE_PATH`, else `instance/` in the project."""
    environ = os.environ if environ is None else environ
    raw = environ.get("VIGIL_INSTANCE_PATH")
    return Path(raw).resolve() if raw else PROJECT_ROOT / "instance"


def load(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return the configuration read from the environment, typed and defaulted."""
    environ = os.environ if environ is None else environ
    config: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = environ.get(setting.env)
        if raw is None or raw == "":
            config[setting.key] = setting.default
        else:
            config[setting.key] = setting.parse(raw)
    return config


def validate(config: Mapping[str, Any]) -> None:
    """Refuse settings that would weaken the service."""
    if not 0 < config["ACCESS_TOKEN_SECONDS"] <= 900:
        raise ValueError("VIGIL_ACCESS_TOKEN_SECONDS must be between 1 and 900")
    if not 0 < config["CONSOLE_IDLE_SECONDS"] <= 900:
        raise ValueError("VIGIL_CONSOLE_IDLE_SECONDS must be between 1 and 900")
    if not 0 < config["CONSOLE_SESSION_SECONDS"] <= 86400:
        raise ValueError("VIGIL_CONSOLE_SESSION_SECONDS must be between 1 and 86400")
    if not all(ORIGIN.fullmatch(origin) for origin in config["WEBAUTHN_ORIGINS"]):
        raise ValueError("VIGIL_WEBAUTHN_ORIGINS must be origins such as "
                         "https://vigil.example.org (a scheme and a host, no path)")
    if config["LOG_FORMAT"] not in {None, "json", "text"}:
        raise ValueError("VIGIL_LOG_FORMAT must be json or text")
    if config["LOG_LEVEL"] not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError("VIGIL_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
    if config["METRICS_TOKEN"] is not None and len(config["METRICS_TOKEN"]) < 32:
        raise ValueError("VIGIL_METRICS_TOKEN must be at least 32 characters")
    if not _networks_valid(config["METRICS_NETWORKS"]):
        raise ValueError("VIGIL_METRICS_NETWORKS must be networks such as 10.0.5.0/24 "
                         "(no host bits set)")
    if config["VIGIL_ENV"] not in {"development", "production", "test"}:
        raise ValueError("VIGIL_ENV must be development, production or test")

"""Load the server's key material, or generate it once for a development instance."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

log = logging.getLogger(__name__)

KEY_FILE = "keys.json"
MIN_SECRET_BYTES = 32


class KeyConfigError(RuntimeError):
    """Key material is missing or malformed."""


def key_id_of(public_key: bytes) -> str:
    """Return the id of a server signing key: the first 16 hex digits of its public key's SHA-256.

    Derived, not configured, so an id can never name the wrong key.
    """
    return hashlib.sha256(public_key).hexdigest()[:16]


@dataclass(frozen=True)
class KeyRing:
    """Hold every key the server uses; built once per app."""

    token_secret: bytes
    signing_key: Ed25519PrivateKey
    phi_keys: Mapping[str, bytes]
    phi_active: str
    blind_index_key: bytes
    # Public halves of the server's earlier signing keys, by key id: what they signed verifies.
    retired_signing_keys: Mapping[str, bytes] = field(default_factory=dict)

    def signing_public_key(self) -> bytes:
        """Return the raw 32-byte Ed25519 public key of the server."""
        return self.signing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def signing_key_id(self) -> str:
        """Return the id of the key the server signs with now."""
        return key_id_of(self.signing_public_key())

    def verifying_keys(self) -> dict[str, bytes]:
        """Return every public key whose signatures the server accepts, by key id."""
        return {**self.retired_signing_keys, self.signing_key_id: self.signing_public_key()}


def _b64(raw: str, name: str, length: int | None = None) -> bytes:
    try:
        value = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyConfigError(f"{name} is not valid base64") from exc
    if length is not None and len(value) != length:
        raise KeyConfigError(f"{name} must decode to {length} bytes")
    if length is None and len(value) < MIN_SECRET_BYTES:
        raise KeyConfigError(f"{name} must decode to at least {MIN_SECRET_BYTES} bytes")
    return value


def _phi_keys(raw: str) -> dict[str, bytes]:
    keys: dict[str, bytes] = {}
    for item in raw.split(","):
        kid, sep, material = item.strip().partition(":")
        if not sep or not kid:
            raise KeyConfigError("VIGIL_PHI_KEYS entries must be kid:base64key")
        keys[kid] = _b64(material, f"VIGIL_PHI_KEYS[{kid}]", 32)
    return keys


def _retired_signing_keys(raw: str | None) -> dict[str, bytes]:
    keys = {}
    for item in (raw or "").split(","):
        if not item.strip():
            continue
        public_key = _b64(item.strip(), "VIGIL_RETIRED_SIGNING_KEYS", 32)
        try:
            Ed25519PublicKey.from_public_bytes(public_key)
        except ValueError as exc:
            raise KeyConfigError("VIGIL_RETIRED_SIGNING_KEYS holds a key that is not an "
                                 "Ed25519 public key") from exc
        keys[key_id_of(public_key)] = public_key
    return keys


def _generate() -> dict[str, str]:
    def fresh(size: int) -> str:
        return base64.b64encode(secrets.token_bytes(size)).decode()

    kid = "k" + secrets.token_hex(4)
    return {
        "SECRET_KEY": fresh(32),
        "SIGNING_KEY": fresh(32),
        "PHI_KEYS": f"{kid}:{fresh(32)}",
        "PHI_ACTIVE_KEY": kid,
        "BLIND_INDEX_KEY": fresh(32),
    }


def _load_or_create_file(instance: Path) -> dict[str, str]:
    path = instance / KEY_FILE
    if path.exists():
        return json.loads(path.read_text())
    instance.mkdir(parents=True, exist_ok=True)
    generated = _generate()
    # O_EXCL: two workers starting together must not each write different keys.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return json.loads(path.read_text())
    with os.fdopen(fd, "w") as handle:
        json.dump(generated, handle, indent=2)
    log.warning("generated development keys into %s; set VIGIL_* keys in production", path)
    return generated


def load_keyring(config: Mapping[str, Any], instance: Path) -> KeyRing:
    """Build the key ring from config; in development, fill gaps from the instance key file."""
    values = {name: config.get(name) for name in
              ("SECRET_KEY", "SIGNING_KEY", "PHI_KEYS", "PHI_ACTIVE_KEY", "BLIND_INDEX_KEY",
               "RETIRED_SIGNING_KEYS")}
    required = ("SECRET_KEY", "SIGNING_KEY", "PHI_KEYS", "BLIND_INDEX_KEY")
    missing = [name for name in required if not values[name]]
    if missing and config["VIGIL_ENV"] == "production":
        names = ", ".join(f"VIGIL_{name}" for name in missing)
        raise KeyConfigError(f"production requires configured keys; missing: {names}")
    if missing:
        stored = _load_or_create_file(instance)
        for name in missing:
            values[name] = stored[name]
        if "PHI_KEYS" in missing:
            values["PHI_ACTIVE_KEY"] = stored["PHI_ACTIVE_KEY"]
        if "SIGNING_KEY" in missing and not values["RETIRED_SIGNING_KEYS"]:
            values["RETIRED_SIGNING_KEYS"] = stored.get("RETIRED_SIGNING_KEYS")
    phi = _phi_keys(values["PHI_KEYS"])
    active = values["PHI_ACTIVE_KEY"] or next(iter(phi))
    if active not in phi:
        raise KeyConfigError(f"VIGIL_PHI_ACTIVE_KEY {active!r} is not in VIGIL_PHI_KEYS")
    return KeyRing(
        token_secret=_b64(values["SECRET_KEY"], "VIGIL_SECRET_KEY"),
        signing_key=Ed25519PrivateKey.from_private_bytes(
            _b64(values["SIGNING_KEY"], "VIGIL_SIGNING_KEY", 32)),
        phi_keys=phi,
        phi_active=active,
        blind_index_key=_b64(values["BLIND_INDEX_KEY"], "VIGIL_BLIND_INDEX_KEY"),
        retired_signing_keys=_retired_signing_keys(values["RETIRED_SIGNING_KEYS"]),
    )


def rotate_signing_key(instance: Path) -> tuple[str, str]:
    """Give a development instance a fresh signing key, keeping the old one's public half.

    Return the retired and the new key ids. The old key's signatures still verify.
    """
    path = instance / KEY_FILE
    stored = json.loads(path.read_text())
    old = Ed25519PrivateKey.from_private_bytes(base64.b64decode(stored["SIGNING_KEY"]))
    old_public = old.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    retired = [item for item in (stored.get("RETIRED_SIGNING_KEYS") or "").split(",") if item]
    stored["RETIRED_SIGNING_KEYS"] = ",".join([*retired, base64.b64encode(old_public).decode()])
    fresh = Ed25519PrivateKey.generate()
    stored["SIGNING_KEY"] = base64.b64encode(fresh.private_bytes_raw()).decode()
    # Written beside the file and renamed over it, so a crash never leaves half a key file.
    draft = path.with_name(f"{path.name}.new")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(stored, handle, indent=2)
    os.replace(draft, path)
    return key_id_of(old_public), key_id_of(
        fresh.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

"""Encrypt PHI at rest with AES-GCM, bound to its place; look up exact values by blind index."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT = "v1"
NONCE_BYTES = 12


class PhiDecryptionError(RuntimeError):
    """A stored value does not decrypt under its key and place."""


@dataclass(frozen=True)
class Place:
    """Where a value lives; bound into the ciphertext so it cannot be moved elsewhere."""

    organisation_id: uuid.UUID
    table: str
    column: str
    row_id: uuid.UUID

    def associated_data(self) -> bytes:
        """Return the AES-GCM associated data for this place."""
        return f"{self.organisation_id}|{self.table}|{self.column}|{self.row_id}".encode()


class PhiCipher:
    """Encrypt under the active key; decrypt under whichever key id a value names."""

    def __init__(self, keys: Mapping[str, bytes], active: str) -> None:
        self._keys = {kid: AESGCM(material) for kid, material in keys.items()}
        self.active = active

    def encrypt(self, plaintext: str, place: Place) -> str:
        """Return `v1.<kid>.<base64(nonce ‖ ciphertext)>`."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[self.active].encrypt(nonce, plaintext.encode(),
                                                 place.associated_data())
        return f"{FORMAT}.{self.active}.{base64.b64encode(nonce + sealed).decode()}"

    def decrypt(self, stored: str, place: Place) -> str:
        """Return the plaintext of a value written by `encrypt` for the same place."""
        version, kid, body = stored.split(".", 2)
        if version != FORMAT or kid not in self._keys:
            raise PhiDecryptionError(f"unknown format or key id {kid!r}")
        raw = base64.b64decode(body)
        try:
            plain = self._keys[kid].decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:],
                                            place.associated_data())
        except InvalidTag as exc:
            raise PhiDecryptionError(f"value at {place} does not authenticate") from exc
        return plain.decode()


def blind_index(key: bytes, organisation_id: uuid.UUID, value: str) -> str:
    """Return the HMAC-SHA256 index of a normalised exact-match value (such as an MRN)."""
    normalised = "".join(value.split()).upper()
    message = f"{organisation_id}|{normalised}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()

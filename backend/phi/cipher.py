"""Encrypt PHI at rest with AES-GCM, bound to its place; look up exact values by blind index."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from backend.errors import VigilError

if TYPE_CHECKING:
    from backend.keys import KeyRing

log = logging.getLogger(__name__)

FORMAT = "v1"
NONCE_BYTES = 12


class PhiIntegrityError(VigilError):
    """A stored PHI value does not decrypt under its key and place: never show anything else."""

    status = 500
    code = "phi_integrity"


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


def _integrity_failure(place: Place, problem: str) -> PhiIntegrityError:
    # Logged here because a 500 must leave a trace, whichever feature was decrypting.
    log.error("PHI integrity failure at %s.%s row %s: %s", place.table, place.column,
              place.row_id, problem)
    return PhiIntegrityError(
        f"The stored {place.table}.{place.column} of row {place.row_id} fails its integrity "
        "check; it is not shown.",
        {"table": place.table, "column": place.column, "row_id": str(place.row_id),
         "problem": problem})


class PhiCipher:
    """Encrypt under the active key; decrypt under whichever key id a value names."""

    def __init__(self, keys: Mapping[str, bytes], active: str) -> None:
        self._keys = {kid: AESGCM(material) for kid, material in keys.items()}
        self.active = active
        self.active_prefix = f"{FORMAT}.{active}."

    @classmethod
    def from_keyring(cls, keys: KeyRing) -> PhiCipher:
        """Return the cipher over a key ring's PHI keys."""
        return cls(keys.phi_keys, keys.phi_active)

    def encrypt(self, plaintext: str, place: Place) -> str:
        """Return `v1.<kid>.<base64(nonce ‖ ciphertext)>`."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[self.active].encrypt(nonce, plaintext.encode(),
                                                 place.associated_data())
        return f"{self.active_prefix}{base64.b64encode(nonce + sealed).decode()}"

    def decrypt(self, stored: str, place: Place) -> str:
        """Return the plaintext of a value written by `encrypt` for the same place."""
        version, _, rest = stored.partition(".")
        kid, _, body = rest.partition(".")
        if version != FORMAT or kid not in self._keys:
            raise _integrity_failure(place, f"unknown format or key id {kid!r}")
        try:
            raw = base64.b64decode(body, validate=True)
            plain = self._keys[kid].decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:],
                                            place.associated_data())
        # binascii.Error is a ValueError; a truncated body gives AESGCM a nonce it refuses.
        except (ValueError, InvalidTag):
            raise _integrity_failure(place, "does not authenticate") from None
        return plain.decode()


def blind_index(key: bytes, organisation_id: uuid.UUID, value: str) -> str:
    """Return the HMAC-SHA256 index of a normalised exact-match value (such as an MRN)."""
    normalised = "".join(value.split()).upper()
    message = f"{organisation_id}|{normalised}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()

"""Hash-chain ledger entries, sign them and their checkpoints: the arithmetic `verify` repeats."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

GENESIS = "0" * 64
# The fields a hash covers, in the order a reader finds them in the table.
HASHED_FIELDS = ("id", "organisation_id", "seq", "kind", "product_id", "lot", "expiry",
                 "quantity_ug", "from_holder", "to_holder", "actor_id", "device_id",
                 "device_signature", "visit_id", "corrects_id", "details", "confirmations",
                 "occurred_at", "received_at")
# What a phone (and a witness) signs: the entry as recorded, before the server adds to it.
SIGNED_FIELDS = ("id", "kind", "product_id", "lot", "expiry", "quantity_ug", "from_holder",
                 "to_holder", "visit_id", "details", "occurred_at")


def plain_value(value: Any) -> Any:
    """Return a hashed field's value as its canonical JSON has it."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        # Always UTC with microseconds: the form the value has when read back from either DB.
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    return value


def canonical_entry(fields: Mapping[str, Any]) -> bytes:
    """Return the canonical bytes of an entry's hashed fields.

    Ledger values are strings, integers, booleans, null and objects of those, for which sorted,
    compact, UTF-8 JSON is exactly RFC 8785; the stdlib encoder does it many times faster.
    """
    plain = {name: plain_value(fields[name]) for name in HASHED_FIELDS}
    return json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def signed_payload(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Return the JSON object a device signs for an entry (RFC 8785 canonical form)."""
    return {name: plain_value(fields[name]) for name in SIGNED_FIELDS}


def entry_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    """Return SHA-256(prev_hash ‖ canonical bytes of the entry), hex."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical_entry(fields)).hexdigest()


def entry_signed_bytes(digest: str) -> bytes:
    """Return the bytes the server signs for an entry: its hash, under a label of its own.

    The hash covers the organisation, the seq and, through `prev_hash`, every entry before it.
    """
    return b"vigil custody entry " + digest.encode()


def sign_entry(key: Ed25519PrivateKey, digest: str) -> str:
    """Return the server's base64 signature over an entry's hash."""
    return base64.b64encode(key.sign(entry_signed_bytes(digest))).decode()


def checkpoint_bytes(organisation_id: uuid.UUID, seq: int, head_hash: str,
                     signed_at: datetime) -> bytes:
    """Return the bytes a checkpoint signature covers."""
    return json.dumps({"organisation_id": str(organisation_id), "seq": seq,
                       "head_hash": head_hash, "signed_at": plain_value(signed_at)},
                      sort_keys=True, separators=(",", ":")).encode()


def sign_checkpoint(key: Ed25519PrivateKey, organisation_id: uuid.UUID, seq: int,
                    head_hash: str, signed_at: datetime) -> str:
    """Return the server's base64 signature over a checkpoint."""
    return base64.b64encode(key.sign(checkpoint_bytes(organisation_id, seq, head_hash,
                                                      signed_at))).decode()

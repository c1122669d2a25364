"""Canonical bytes of a payload, and verification of a device's Ed25519 signature over them."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.orm import Session

from backend.devices.models import Device
from backend.errors import SignatureInvalid
from backend.tenancy import of_organisation

# RFC 8785 forbids integers a JavaScript number cannot hold exactly.
SAFE_INTEGER = 2**53 - 1


def _like_json_dumps(value: Any) -> bool:
    """Tell whether `json.dumps` writes `value` exactly as RFC 8785 does.

    It does for nulls, booleans, safe integers, strings, and objects with ASCII keys: its
    escapes are the same, and ASCII keys sort the same by code point as by UTF-16 unit. Only
    numbers with a fraction (ES6 formatting) and other keys need the full algorithm.
    """
    if value is None or isinstance(value, bool | str):
        return True
    if isinstance(value, int):
        return -SAFE_INTEGER <= value <= SAFE_INTEGER
    if isinstance(value, list):
        return all(_like_json_dumps(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and key.isascii() and _like_json_dumps(item)
                   for key, item in value.items())
    return False


def canonical_bytes(payload: Any) -> bytes:
    """Return the RFC 8785 (JCS) canonical UTF-8 bytes of a JSON-compatible payload."""
    if _like_json_dumps(payload):
        # The standard library's C encoder: a phone's rows are checked by the hundred.
        try:
            return json.dumps(payload, sort_keys=True, separators=(",", ":"),
                              ensure_ascii=False).encode()
        except UnicodeEncodeError:
            pass
    try:
        return rfc8785.dumps(payload)
    except (rfc8785.CanonicalizationError, TypeError) as exc:
        raise SignatureInvalid("The payload cannot be canonicalised.",
                               {"reason": "not_canonicalisable"}) from exc


def verify_with_key(public_key: bytes, payload: Any, signature_b64: str) -> None:
    """Raise `SignatureInvalid` unless `signature_b64` signs `payload` under `public_key`."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureInvalid("The signature is not valid base64.",
                               {"reason": "malformed_signature"}) from exc
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature,
                                                               canonical_bytes(payload))
    except InvalidSignature as exc:
        raise SignatureInvalid("The device signature does not match the payload.",
                               {"reason": "bad_signature"}) from exc


def verify_device_signature(session: Session, *, organisation_id: uuid.UUID,
                            user_id: uuid.UUID, device_id: uuid.UUID, payload: Any,
                            signature_b64: str) -> Device:
    """Verify that the user's live device signed `payload`; return the device."""
    device = of_organisation(session, Device, device_id, organisation_id)
    if device is None or device.user_id != user_id:
        raise SignatureInvalid("The signing device is not registered to this user.",
                               {"reason": "unknown_device", "device_id": str(device_id)})
    if device.revoked_at is not None:
        raise SignatureInvalid("The signing device has been revoked.",
                               {"reason": "revoked_device", "device_id": str(device_id)})
    verify_with_key(device.public_key, payload, signature_b64)
    return device

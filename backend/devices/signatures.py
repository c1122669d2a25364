"""Canonical bytes of a payload, and verification of a device's Ed25519 signature over them."""

from __future__ import annotations

import base64
import binascii
import json
import os
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
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
# Below this many signatures, handing half to another thread costs more than it saves.
SHARED_FROM = 16


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
    refusal = verify_all(public_key, [(payload, signature_b64)])[0]
    if refusal is not None:
        raise refusal


def verify_all(public_key: bytes,
               signed: Sequence[tuple[Any, str]]) -> list[SignatureInvalid | None]:
    """Check each (payload, base64 signature) under `public_key`; return each one's refusal."""
    key = Ed25519PublicKey.from_public_bytes(public_key)
    refusals: list[SignatureInvalid | None] = [None] * len(signed)
    checks: list[tuple[int, bytes, bytes]] = []
    for at, (payload, signature_b64) in enumerate(signed):
        try:
            checks.append((at, _signature(signature_b64), canonical_bytes(payload)))
        except SignatureInvalid as refused:
            refusals[at] = refused
    if len(checks) < SHARED_FROM:
        _check(key, checks, refusals)
        return refusals
    # cryptography lets go of the GIL while it verifies: half on the helper thread, half here.
    half = len(checks) // 2
    other = _helper(os.getpid()).submit(_check, key, checks[:half], refusals)
    _check(key, checks[half:], refusals)
    other.result()
    return refusals


@cache
def _helper(_pid: int) -> ThreadPoolExecutor:
    """Return this process's signature thread, made once (by pid: a fork has no threads)."""
    return ThreadPoolExecutor(1, thread_name_prefix="ed25519")


def _signature(signature_b64: str) -> bytes:
    try:
        return base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureInvalid("The signature is not valid base64.",
                               {"reason": "malformed_signature"}) from exc


def _check(key: Ed25519PublicKey, checks: Sequence[tuple[int, bytes, bytes]],
           refusals: list[SignatureInvalid | None]) -> None:
    """Verify each (position, signature, message), noting a mismatch at its position."""
    for at, signature, message in checks:
        try:
            key.verify(signature, message)
        except InvalidSignature:
            refusals[at] = SignatureInvalid("The device signature does not match the payload.",
                                            {"reason": "bad_signature"})


def verify_device_signature(session: Session, *, organisation_id: uuid.UUID,
                            user_id: uuid.UUID, device_id: uuid.UUID, payload: Any,
                            signature_b64: str) -> Device:
    """Verify that the user's live device signed `payload`; return the device."""
    device = live_device(session, organisation_id=organisation_id, user_id=user_id,
                         device_id=device_id)
    verify_with_key(device.public_key, payload, signature_b64)
    return device


def live_device(session: Session, *, organisation_id: uuid.UUID, user_id: uuid.UUID,
                device_id: uuid.UUID) -> Device:
    """Return the user's registered, unrevoked device; raise `SignatureInvalid` if it is not."""
    device = of_organisation(session, Device, device_id, organisation_id)
    if device is None or device.user_id != user_id:
        raise SignatureInvalid("The signing device is not registered to this user.",
                               {"reason": "unknown_device", "device_id": str(device_id)})
    if device.revoked_at is not None:
        raise SignatureInvalid("The signing device has been revoked.",
                               {"reason": "revoked_device", "device_id": str(device_id)})
    return device

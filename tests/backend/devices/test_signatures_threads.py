"""Checking a batch of signatures on two threads answers exactly as checking them one by one."""

from __future__ import annotations

import base64
import random
import threading

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from backend.devices import signatures
from backend.devices.signatures import SHARED_FROM, verify_all, verify_with_key
from backend.errors import SignatureInvalid


def _batch(size: int, seed: int) -> tuple[bytes, list[tuple[dict, str]]]:
    """Return a public key and a mix of good, forged, malformed and uncanonical signatures."""
    rng = random.Random(seed)
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    signed = []
    for at in range(size):
        payload = {"id": str(at), "systolic": rng.randint(40, 300)}
        signature = base64.b64encode(key.sign(signatures.canonical_bytes(payload))).decode()
        fault = rng.choice(("none", "none", "forged", "malformed", "uncanonical"))
        if fault == "forged":
            payload = {**payload, "systolic": payload["systolic"] + 1}
        elif fault == "malformed":
            signature = "not base64!"
        elif fault == "uncanonical":
            payload = {**payload, "ratio": float("nan")}
        signed.append((payload, signature))
    return public, signed


def _one_by_one(public: bytes, signed: list[tuple[dict, str]]) -> list[tuple | None]:
    out = []
    for payload, signature in signed:
        try:
            verify_with_key(public, payload, signature)
        except SignatureInvalid as refused:
            out.append((refused.message, refused.details))
            continue
        out.append(None)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_a_batch_on_two_threads_answers_as_one_by_one(seed, monkeypatch):
    public, signed = _batch(SHARED_FROM * 4 + seed, seed)
    threads = set()
    check = signatures._check

    def spied(*args):
        threads.add(threading.get_ident())
        check(*args)

    monkeypatch.setattr(signatures, "_check", spied)
    batch = [None if refused is None else (refused.message, refused.details)
             for refused in verify_all(public, signed)]
    assert len(threads) == 2, "the batch was shared between two threads"
    monkeypatch.setattr(signatures, "_check", check)
    assert batch == _one_by_one(public, signed)
    reasons = {None if outcome is None else outcome[1]["reason"] for outcome in batch}
    assert reasons == {None, "bad_signature", "malformed_signature", "not_canonicalisable"}


def test_a_small_batch_stays_on_the_callers_thread(monkeypatch):
    public, signed = _batch(SHARED_FROM - 1, 9)
    threads = set()
    check = signatures._check
    monkeypatch.setattr(signatures, "_check",
                        lambda *args: (threads.add(threading.get_ident()), check(*args)))
    verify_all(public, signed)
    assert threads == {threading.get_ident()}

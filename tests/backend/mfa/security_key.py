"""A software security key: what a browser and a key return to WebAuthn's options.

It keeps one ES256 credential (an EC P-256 key pair) and a signature counter, answers
registration options with a `none` attestation and request options with an assertion, and
shapes both as the JSON a browser's `PublicKeyCredential.toJSON()` gives.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import uuid

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

ORIGIN = "http://localhost"
# Authenticator data flags (WebAuthn §6.1): user present, user verified, attested data.
UP, UV, AT = 0x01, 0x04, 0x40
ES256, EC2, P256 = -7, 2, 1


def b64url(raw: bytes) -> str:
    """Return `raw` as base64url without padding, as WebAuthn's JSON carries bytes."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    """Return the bytes of a base64url string with or without padding."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Excluded(Exception):
    """The key holds a credential the options exclude (a browser's InvalidStateError)."""


class SecurityKey:
    """A security key with one credential, answering as a browser at `origin` would relay."""

    def __init__(self, origin: str = ORIGIN, *, counts: bool = True) -> None:
        self.origin, self.counts = origin, counts
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.credential_id = secrets.token_bytes(16)
        self.sign_count = 0
        self.user_handle: bytes | None = None

    def cose_public_key(self) -> bytes:
        """Return the credential's public key as a COSE_Key (EC2, P-256, ES256)."""
        numbers = self.private_key.public_key().public_numbers()
        return cbor2.dumps({1: EC2, 3: ES256, -1: P256, -2: numbers.x.to_bytes(32, "big"),
                            -3: numbers.y.to_bytes(32, "big")})

    def _authenticator_data(self, rp_id: str, flags: int, extra: bytes = b"") -> bytes:
        return (hashlib.sha256(rp_id.encode()).digest() + bytes([flags])
                + self.sign_count.to_bytes(4, "big") + extra)

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        return json.dumps({"type": kind, "challenge": challenge,
                           "origin": origin or self.origin, "crossOrigin": False}).encode()

    def register(self, options: dict, *, origin: str | None = None,
                 rp_id: str | None = None) -> dict:
        """Answer PublicKeyCredentialCreationOptions JSON as `navigator.credentials.create()`."""
        if b64url(self.credential_id) in {c["id"] for c in options["excludeCredentials"]}:
            raise Excluded(options["excludeCredentials"])
        self.user_handle = unb64url(options["user"]["id"])
        attested = (uuid.UUID(int=0).bytes + len(self.credential_id).to_bytes(2, "big")
                    + self.credential_id + self.cose_public_key())
        auth_data = self._authenticator_data(rp_id or options["rp"]["id"], UP | UV | AT,
                                             attested)
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        client_data = self._client_data("webauthn.create", options["challenge"], origin)
        return self._credential({"clientDataJSON": b64url(client_data),
                                 "attestationObject": b64url(attestation),
                                 "transports": ["usb"]})

    def assertion(self, options: dict, *, origin: str | None = None, rp_id: str | None = None,
                  sign_count: int | None = None, challenge: str | None = None,
                  user_handle: bytes | None = None) -> dict:
        """Answer PublicKeyCredentialRequestOptions JSON as `navigator.credentials.get()`.

        The counter grows by one (stays 0 for a key that keeps none) unless `sign_count` says
        what to claim; the other keywords make the answers a browser would not give.
        """
        if sign_count is not None:
            self.sign_count = sign_count
        elif self.counts:
            self.sign_count += 1
        auth_data = self._authenticator_data(rp_id or options["rpId"], UP | UV)
        client_data = self._client_data("webauthn.get", challenge or options["challenge"],
                                        origin)
        signature = self.private_key.sign(auth_data + hashlib.sha256(client_data).digest(),
                                          ec.ECDSA(hashes.SHA256()))
        handle = user_handle or self.user_handle
        return self._credential({"clientDataJSON": b64url(client_data),
                                 "authenticatorData": b64url(auth_data),
                                 "signature": b64url(signature),
                                 "userHandle": b64url(handle) if handle else None})

    def _credential(self, response: dict) -> dict:
        return {"id": b64url(self.credential_id), "rawId": b64url(self.credential_id),
                "type": "public-key", "response": response,
                "authenticatorAttachment": "cross-platform", "clientExtensionResults": {}}

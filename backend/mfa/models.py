"""Second factors (a TOTP authenticator now; security keys later) and single-use recovery codes."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Enum, ForeignKey, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, new_id
from backend.phi.registry import EncryptedColumns
from backend.phi.sealed import Sealed


class FactorKind(StrEnum):
    """What a second factor is."""

    TOTP = "totp"
    WEBAUTHN = "webauthn"


class SecondFactor(Base):
    """A user's second factor: pending until a code confirms it; removed, never deleted."""

    __tablename__ = "second_factor"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("app_user.id"), index=True)
    # The user's organisation, which the secret's ciphertext is bound to.
    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"))
    kind: Mapped[FactorKind] = mapped_column(Enum(
        FactorKind, native_enum=False, length=10, create_constraint=True, name="factor_kind",
        values_callable=lambda kinds: [kind.value for kind in kinds]))
    label: Mapped[str] = mapped_column(String(100))
    # The TOTP shared secret (base32), sealed as PHI is so that a copy of the database does not
    # hand over everyone's authenticator; wiped when the factor is removed. None for a kind
    # without a shared secret.
    secret_enc: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    confirmed_at: Mapped[datetime | None]
    # The TOTP time step of the last code accepted: a code of this step or an earlier one is
    # refused, so a code seen over a shoulder cannot be used again within its window.
    last_used_step: Mapped[int | None]
    removed_at: Mapped[datetime | None]
    removed_by_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("app_user.id"))
    # A security key's credential (WebAuthn): its id, COSE public key and signature counter,
    # which must grow with each assertion when the key keeps one (a cloned key shows as a
    # counter that goes back).
    credential_id: Mapped[bytes | None] = mapped_column(LargeBinary(1023), unique=True)
    public_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    sign_count: Mapped[int | None] = mapped_column(BigInteger)

    secret = Sealed()


SECOND_FACTOR_SECRETS = EncryptedColumns(SecondFactor, ("secret",))


class RecoveryCode(Base):
    """A single-use recovery code, kept only as its keyed hash (HMAC-SHA256)."""

    __tablename__ = "recovery_code"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("app_user.id"), index=True)
    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"))
    code_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    created_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class FactorChallenge(Base):
    """A single-use WebAuthn challenge, issued for a sign-in, a step-up or an enrolment."""

    __tablename__ = "factor_challenge"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("app_user.id"), index=True)
    purpose: Mapped[str] = mapped_column(String(20))
    challenge: Mapped[bytes] = mapped_column(LargeBinary(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]

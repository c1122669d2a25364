"""The controlled-substance ledger, its per-organisation head, balances, checkpoints and losses."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, new_id
from backend.phi.registry import EncryptedColumns
from backend.phi.sealed import Sealed


class Kind(StrEnum):
    """What a ledger entry records."""

    RECEIVE = "receive"
    DISPENSE = "dispense"
    TRANSFER = "transfer"
    ADMINISTER = "administer"
    WASTE = "waste"
    RETURN = "return"
    ADJUST = "adjust"
    LOSS = "loss"
    DESTROY = "destroy"


class CustodyEntry(Base):
    """One movement of stock, hash-chained to the one before it; never updated or deleted.

    Holders are strings: `vault`, `bag:<nurse id>`, `patient:<patient id>`, `supplier`,
    `waste`, `destruction`, `loss`, `count` (a counting correction). Patients appear only by
    their surrogate id. `details` (a supplier, a seal, a count's reason, a loss's
    circumstances) is free text that may name anyone: it is stored as PHI ciphertext, and the
    hash and signatures cover its plaintext, so verification decrypts it.
    """

    __tablename__ = "custody_entry"
    __table_args__ = (
        UniqueConstraint("organisation_id", "seq"),
        # A holder's movements in a window (a bag's shift, a flag's timeline) by index alone.
        Index("ix_custody_entry_org_from", "organisation_id", "from_holder", "occurred_at"),
        Index("ix_custody_entry_org_to", "organisation_id", "to_holder", "occurred_at"),
        Index("ix_custody_entry_org_occurred", "organisation_id", "occurred_at"),
        # A visit's waste and administer entries are read by every inline safeguards check.
        Index("ix_custody_entry_visit", "visit_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"))
    seq: Mapped[int]
    kind: Mapped[str] = mapped_column(String(12))
    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("drug_product.id"))
    lot: Mapped[str] = mapped_column(String(40))
    expiry: Mapped[date]
    quantity_ug: Mapped[int]
    from_holder: Mapped[str] = mapped_column(String(60))
    to_holder: Mapped[str] = mapped_column(String(60))
    actor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("app_user.id"))
    device_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("device.id"))
    device_signature: Mapped[str | None] = mapped_column(String(100))
    visit_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("visit.id"))
    corrects_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("custody_entry.id"))
    details_enc: Mapped[str] = mapped_column(Text)
    confirmations: Mapped[list] = mapped_column(JSON)
    occurred_at: Mapped[datetime]
    received_at: Mapped[datetime]
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))
    # The server's Ed25519 signature over `entry_hash` at append, and the id of its key; null
    # only on entries appended before migration 0008, which a signed checkpoint vouches for.
    server_key_id: Mapped[str | None] = mapped_column(String(16))
    server_signature: Mapped[str | None] = mapped_column(String(100))
    # The record the phone signed when the movement follows from it (a dose's `administer`):
    # `device_signature` is over this body, and the movement must be the one it implies.
    signed_record: Mapped[dict | None] = mapped_column(JSON)

    details = Sealed(as_json=True)


CUSTODY_ENTRY_PHI = EncryptedColumns(CustodyEntry, ("details",))


class CustodyHead(Base):
    """The head of an organisation's chain: its row lock serialises appends."""

    __tablename__ = "custody_head"

    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"),
                                                       primary_key=True)
    seq: Mapped[int]
    head_hash: Mapped[str] = mapped_column(String(64))


class CustodyBalance(Base):
    """What one holder holds of one product lot, kept in step with the ledger."""

    __tablename__ = "custody_balance"

    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"),
                                                       primary_key=True)
    holder: Mapped[str] = mapped_column(String(60), primary_key=True)
    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("drug_product.id"),
                                                  primary_key=True)
    lot: Mapped[str] = mapped_column(String(40), primary_key=True)
    expiry: Mapped[date]
    # 64-bit: three 1 g receipts would overflow a 32-bit integer (the ledger caps it at 2^53 − 1).
    quantity_ug: Mapped[int] = mapped_column(BigInteger)


class CustodyCheckpoint(Base):
    """The server's Ed25519 signature over (organisation, seq, head hash, time); append-only."""

    __tablename__ = "custody_checkpoint"
    __table_args__ = (UniqueConstraint("organisation_id", "seq"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"))
    seq: Mapped[int]
    head_hash: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime]
    signature: Mapped[str] = mapped_column(String(100))
    public_key: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(16))


class LossReport(Base):
    """A theft or significant loss and its two DEA deadlines (21 CFR 1301.76(b))."""

    __tablename__ = "loss_report"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"),
                                                       index=True)
    entry_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("custody_entry.id"), unique=True)
    discovered_at: Mapped[datetime]
    notice_due_at: Mapped[datetime]
    form_106_due_at: Mapped[datetime]
    notice_filed_at: Mapped[datetime | None]
    form_106_filed_at: Mapped[datetime | None]
    circumstances_enc: Mapped[str] = mapped_column(Text)
    # What DEA Form 106 asks beyond the ledger entry: the type of theft or loss and, where it
    # was reported, the police report. Kept here, not in the signed entry, since they follow.
    loss_type: Mapped[str | None] = mapped_column(String(40))
    police_report_number: Mapped[str | None] = mapped_column(String(60))
    police_agency: Mapped[str | None] = mapped_column(String(200))
    police_reported_at: Mapped[datetime | None]

    circumstances = Sealed()


LOSS_REPORT_PHI = EncryptedColumns(LossReport, ("circumstances",))


class InventoryRecord(Base):
    """An inventory taken and signed (21 CFR 1304.11): the stock as the ledger stood, kept."""

    __tablename__ = "inventory_record"
    __table_args__ = (Index("ix_inventory_record_organisation_as_of", "organisation_id",
                            "as_of"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"))
    # initial, biennial, or another (a change of schedule, a new pharmacist in charge).
    kind: Mapped[str] = mapped_column(String(20))
    as_of: Mapped[datetime]
    # Open or close of business, as 1304.11(a) requires an inventory to say.
    at: Mapped[str] = mapped_column(String(10))
    taken_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("app_user.id"))
    signed_at: Mapped[datetime]
    signature_method: Mapped[str | None] = mapped_column(String(20))
    signature_factor_id: Mapped[uuid.UUID | None]
    # Each line as taken (holder, product, lot, quantities) and the SHA-256 of its canonical
    # JSON, so a later reading shows what was signed, not what the ledger says today.
    lines: Mapped[list] = mapped_column(JSON)
    content_hash: Mapped[str] = mapped_column(String(64))


class CustodyRefusal(Base):
    """A custody write refused at the door (wrong seal, too little stock, no witness).

    The write itself rolls back; this fact of it is kept after the rollback so the rules can
    see a nurse whose returns keep failing. No PHI: holders, lots and visits by id only.
    """

    __tablename__ = "custody_refusal"
    __table_args__ = (Index("ix_custody_refusal_org_nurse_at", "organisation_id", "nurse_id",
                            "at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"))
    at: Mapped[datetime]
    actor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("app_user.id"))
    device_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("device.id"))
    # The nurse whose bag or write it was: the poster, or the bag's nurse at a pharmacist's desk.
    nurse_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("app_user.id"))
    kind: Mapped[str] = mapped_column(String(20))
    code: Mapped[str] = mapped_column(String(40))
    holder: Mapped[str | None] = mapped_column(String(60))
    product_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("drug_product.id"))
    lot: Mapped[str | None] = mapped_column(String(40))
    visit_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("visit.id"))
    quantity_ug: Mapped[int | None]

"""phi at rest: signed bodies, quarantined payloads and every free-text field as ciphertext

Revision ID: 0009
Revises: 0011
Create Date: 2026-12-08

Each column below that may hold what a person wrote (or a phone sent) becomes `<name>_enc`:
AES-GCM ciphertext under the active PHI key, bound to (organisation, table, name, row), as the
patient's PHI already is. Signed bodies keep beside it `<name>_sha256`, the SHA-256 of their
canonical JSON, so that a retried record is recognised without decrypting. Existing rows are
encrypted here, with the keys `vigil db upgrade` holds; downgrading decrypts them back.

The audit rows of plan revisions and visit cancellations lose the `reason` they quoted: the
reason stays, encrypted, on the plan version and the visit. That is not undone by downgrading.

Append-only tables that hold ciphertext let an UPDATE set those columns only, so that
`vigil keys rotate` can re-encrypt them; any other column stays refused.

On SQLite the rows are rewritten with `secure_delete` on, so the pages that held the clear text
are zeroed. PostgreSQL keeps old row versions in its files until they are vacuumed: run
`VACUUM FULL` on these tables after upgrading (README, "PHI at rest").
"""

import hashlib
import json
from collections.abc import Iterator
from typing import NamedTuple

import sqlalchemy as sa
from alembic import op

from backend.append_only import drop_append_only, make_append_only
from backend.phi.cipher import PhiCipher, Place

revision = "0009"
down_revision = "0011"
branch_labels = None
depends_on = None

PHI_CIPHER = "vigil.phi"
BATCH = 500


class Sealed(NamedTuple):
    """A column whose clear value becomes `<column>_enc` (and `<column>_sha256` if digested)."""

    column: str
    as_json: bool = False
    digested: bool = False
    nullable: bool = True


BODY = Sealed("signed_body", as_json=True, digested=True, nullable=False)
SEALED = {
    "pre_dose": (BODY, Sealed("decision_reason"), Sealed("bp_justification")),
    "dose_administration": (BODY,),
    "monitoring_observation": (BODY,),
    "discharge": (BODY,),
    "outcome_score": (BODY,),
    "quarantined_event": (Sealed("payload", as_json=True, nullable=False),),
    "evv_event": (Sealed("reason"), BODY._replace(nullable=True)),
    "visit": (Sealed("status_reason"), Sealed("override_reason")),
    "plan_version": (Sealed("change_reason"),),
    "custody_entry": (Sealed("details", as_json=True, nullable=False),),
    "loss_report": (Sealed("circumstances", nullable=False),),
    "flag": (Sealed("summary", nullable=False), Sealed("evidence", as_json=True, nullable=False)),
    "flag_event": (Sealed("note"), Sealed("detail", as_json=True, nullable=False)),
}
# Append-only tables and the ciphertext columns key rotation may rewrite in them.
APPEND_ONLY = {
    "pre_dose": ("signed_body_enc", "decision_reason_enc", "bp_justification_enc"),
    "dose_administration": ("signed_body_enc",),
    "monitoring_observation": ("signed_body_enc",),
    "discharge": ("signed_body_enc", "adverse_events_enc"),
    "outcome_score": ("signed_body_enc",),
    "quarantined_event": ("payload_enc",),
    "evv_event": ("reason_enc", "signed_body_enc"),
    "custody_entry": ("details_enc",),
    "flag_event": ("note_enc", "detail_enc"),
}
# Audit actions whose detail quoted a free-text reason, kept encrypted on their row instead.
QUOTING_AUDIT = ("plan.revise", "visit.cancel")


def _canonical(value) -> str:
    """Return the sorted, compact JSON text a sealed value is stored as (as `sealed` does)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _cipher() -> PhiCipher:
    cipher = op.get_context().config.attributes.get(PHI_CIPHER)
    if cipher is None:
        raise RuntimeError("revision 0009 encrypts stored PHI and needs the PHI keys: run it "
                           "with `vigil db upgrade` (or `vigil db downgrade`)")
    return cipher


def _table(name: str, specs: tuple[Sealed, ...]) -> sa.TableClause:
    """Return the table's id, organisation and the clear, sealed and digest columns of `specs`."""
    columns = [sa.column("id", sa.Uuid()), sa.column("organisation_id", sa.Uuid())]
    for spec in specs:
        columns += [sa.column(spec.column, sa.JSON() if spec.as_json else sa.Text()),
                    sa.column(f"{spec.column}_enc", sa.Text())]
        if spec.digested:
            columns.append(sa.column(f"{spec.column}_sha256", sa.String()))
    return sa.table(name, *columns)


def _pages(bind, table: sa.TableClause, names: list[str]) -> Iterator[list]:
    """Yield the rows where any of `names` holds a value, a page at a time, in id order."""
    last = None
    while True:
        query = sa.select(table.c.id, table.c.organisation_id, *(table.c[n] for n in names)).where(
            sa.or_(*(table.c[name].is_not(None) for name in names)))
        if last is not None:
            query = query.where(table.c.id > last)
        rows = bind.execute(query.order_by(table.c.id).limit(BATCH)).all()
        if not rows:
            return
        yield rows
        last = rows[-1].id


def _sealed(box: PhiCipher, name: str, spec: Sealed, row) -> dict[str, str]:
    """Return the ciphertext (and digest) of one clear value."""
    value = getattr(row, spec.column)
    if value is None:
        return {}
    text = _canonical(value) if spec.as_json else value
    out = {f"{spec.column}_enc": box.encrypt(text, Place(row.organisation_id, name,
                                                          spec.column, row.id))}
    if spec.digested:
        out[f"{spec.column}_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    return out


def _encrypt_table(bind, name: str, specs: tuple[Sealed, ...]) -> None:
    table = _table(name, specs)
    for rows in _pages(bind, table, [spec.column for spec in specs]):
        box = _cipher()
        values = [{"_id": row.id, **{key: value for spec in specs
                                     for key, value in _sealed(box, name, spec, row).items()}}
                  for row in rows]
        # One executemany per set of columns written: optional values are often missing.
        for keys in {tuple(sorted(v)) for v in values}:
            bind.execute(table.update().where(table.c.id == sa.bindparam("_id")).values(
                {key: sa.bindparam(key) for key in keys if key != "_id"}),
                [v for v in values if tuple(sorted(v)) == keys])


def _decrypt_table(bind, name: str, specs: tuple[Sealed, ...]) -> None:
    table = _table(name, specs)
    for rows in _pages(bind, table, [f"{spec.column}_enc" for spec in specs]):
        box = _cipher()
        for row in rows:
            values = {}
            for spec in specs:
                stored = getattr(row, f"{spec.column}_enc")
                if stored is not None:
                    text = box.decrypt(stored, Place(row.organisation_id, name, spec.column,
                                                     row.id))
                    values[spec.column] = json.loads(text) if spec.as_json else text
            bind.execute(table.update().where(table.c.id == row.id).values(values))


def _plan_version_organisations() -> None:
    op.execute("UPDATE plan_version SET organisation_id = (SELECT organisation_id FROM "
               "treatment_plan WHERE treatment_plan.id = plan_version.plan_id)")


def _redact_audit(bind) -> None:
    audit = sa.table("audit_event", sa.column("id", sa.Uuid()), sa.column("action", sa.String()),
                     sa.column("detail", sa.JSON()))
    for row in bind.execute(sa.select(audit.c.id, audit.c.detail)
                            .where(audit.c.action.in_(QUOTING_AUDIT))).all():
        if isinstance(row.detail, dict) and "reason" in row.detail:
            detail = {key: value for key, value in row.detail.items() if key != "reason"}
            bind.execute(audit.update().where(audit.c.id == row.id).values(detail=detail))


def _secure_delete(bind, on: bool | None) -> bool | None:
    """Turn SQLite's secure_delete on or off (None leaves it); return what it was.

    On, SQLite overwrites what it frees with zeros: the clear text a row or a copied table
    held does not stay behind in free pages.
    """
    if bind.dialect.name != "sqlite" or on is None:
        return None
    before = bool(bind.exec_driver_sql("PRAGMA secure_delete").scalar())
    bind.exec_driver_sql(f"PRAGMA secure_delete = {int(on)}")
    return before


def _clear_type(spec: Sealed) -> sa.types.TypeEngine:
    return sa.JSON() if spec.as_json else sa.Text()


def _add_sealed(name: str, specs: tuple[Sealed, ...]) -> None:
    with op.batch_alter_table(name, schema=None) as batch_op:
        for spec in specs:
            batch_op.add_column(sa.Column(f"{spec.column}_enc", sa.Text(), nullable=True))
            if spec.digested:
                batch_op.add_column(sa.Column(f"{spec.column}_sha256", sa.String(length=64),
                                              nullable=True))


def _drop_clear(name: str, specs: tuple[Sealed, ...]) -> None:
    with op.batch_alter_table(name, schema=None) as batch_op:
        for spec in specs:
            batch_op.drop_column(spec.column)
            if not spec.nullable:
                batch_op.alter_column(f"{spec.column}_enc", existing_type=sa.Text(),
                                      nullable=False)
                if spec.digested:
                    batch_op.alter_column(f"{spec.column}_sha256",
                                          existing_type=sa.String(length=64), nullable=False)
        if name == "plan_version":
            batch_op.alter_column("organisation_id", existing_type=sa.Uuid(), nullable=False)
            batch_op.create_foreign_key(
                batch_op.f("fk_plan_version_organisation_id_organisation"),
                "organisation", ["organisation_id"], ["id"])


def upgrade() -> None:
    """Apply this revision."""
    bind = op.get_bind()
    secure = _secure_delete(bind, True)
    for table in (*APPEND_ONLY, "audit_event"):
        drop_append_only(op, table)
    with op.batch_alter_table("plan_version", schema=None) as batch_op:
        batch_op.add_column(sa.Column("organisation_id", sa.Uuid(), nullable=True))
    op.execute("UPDATE plan_version SET organisation_id = (SELECT organisation_id FROM "
               "treatment_plan WHERE treatment_plan.id = plan_version.plan_id)")
    for name, specs in SEALED.items():
        _add_sealed(name, specs)
        _encrypt_table(bind, name, specs)
        _drop_clear(name, specs)
    _redact_audit(bind)
    make_append_only(op, "audit_event")
    for table, rewritable in APPEND_ONLY.items():
        make_append_only(op, table, rewritable)
    _secure_delete(bind, secure)


def _restore_clear(name: str, specs: tuple[Sealed, ...]) -> None:
    with op.batch_alter_table(name, schema=None) as batch_op:
        for spec in specs:
            batch_op.drop_column(f"{spec.column}_enc")
            if spec.digested:
                batch_op.drop_column(f"{spec.column}_sha256")
            if not spec.nullable:
                batch_op.alter_column(spec.column, existing_type=_clear_type(spec),
                                      nullable=False)
        if name == "plan_version":
            batch_op.drop_constraint(
                batch_op.f("fk_plan_version_organisation_id_organisation"), type_="foreignkey")
            batch_op.drop_column("organisation_id")


def downgrade() -> None:
    """Revert this revision: decrypt every sealed value back into its clear column."""
    bind = op.get_bind()
    secure = _secure_delete(bind, True)
    for table in APPEND_ONLY:
        drop_append_only(op, table)
    for name, specs in SEALED.items():
        with op.batch_alter_table(name, schema=None) as batch_op:
            for spec in specs:
                batch_op.add_column(sa.Column(spec.column, _clear_type(spec), nullable=True))
        _decrypt_table(bind, name, specs)
        _restore_clear(name, specs)
    for table in APPEND_ONLY:
        make_append_only(op, table)
    _secure_delete(bind, secure)

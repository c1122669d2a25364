"""Writers tell the sync index who sees their rows; the index never numbers a lost row.

`ledger.append` passes its entry's audience (organisation, the bags' nurses), and a push its
records' (organisation, the visit's patient), to the commit's numbering instead of having it
read back (for an append, under the chain head's lock). What they tell must be what the table
says. A savepoint rolled back after an append takes its entry with it: the told audience must
then be forgotten, or the index would number a row that does not exist.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from sqlalchemy import select

from backend.custody.ledger import VAULT, Attestation, Movement, append, bag
from backend.custody.models import Kind
from backend.sync.models import SyncRow
from backend.sync.tables import BY_NAME, Audience
from tests.backend.sync.test_sync import DAY1, Handset, session_rows
from tests.factories import SUPPLIER, Pharmacy, World

AT = datetime(2026, 11, 3, 15, 30, tzinfo=UTC)


def _movement(pharmacy: Pharmacy, kind: Kind, source: str, target: str) -> Movement:
    details = SUPPLIER if kind == Kind.RECEIVE else {"seal_id": "S-1"}
    return Movement(id=uuid.uuid4(), kind=kind, product_id=uuid.UUID(pharmacy.product_id),
                    lot="L1", expiry=date(2028, 1, 31), quantity_ug=100, from_holder=source,
                    to_holder=target, occurred_at=AT, details=details)


def _append(world: World, pharmacy: Pharmacy, movement: Movement) -> uuid.UUID:
    return append(world.session, pharmacy.org.id, movement, Attestation(pharmacy.nurse.id), AT,
                  keys=world.rt.keys).id


def _indexed(world: World, ids: list[uuid.UUID],
             table: str = "custody_entries") -> dict[uuid.UUID, Audience]:
    """Return the sync index's audience of each of `ids` that it numbered."""
    rows = world.session.scalars(select(SyncRow).where(
        SyncRow.table_name == table, SyncRow.record_id.in_(ids)))
    return {row.record_id: Audience(row.record_id, row.organisation_id, row.patient_id,
                                    row.nurse_id, row.peer_nurse_id) for row in rows}


def test_an_appended_entry_is_indexed_for_whom_its_table_says(world: World):
    pharmacy = Pharmacy(world)
    other = world.user(pharmacy.org, pharmacy.nurse.role)
    world.commit()
    nurse_bag = bag(pharmacy.nurse.id)
    ids = [_append(world, pharmacy, _movement(pharmacy, kind, source, target)) for
           kind, source, target in [(Kind.RECEIVE, "supplier", VAULT),
                                    (Kind.DISPENSE, VAULT, nurse_bag),
                                    (Kind.TRANSFER, nurse_bag, bag(other.id)),
                                    (Kind.RETURN, bag(other.id), VAULT)]]
    world.commit()

    indexed = _indexed(world, ids)
    assert indexed == {who.record_id: who for who in
                       BY_NAME["custody_entries"].audience(world.session, ids)}
    assert [(indexed[i].nurse_id, indexed[i].peer_nurse_id) for i in ids] == [
        (None, None), (None, pharmacy.nurse.id), (pharmacy.nurse.id, other.id), (other.id, None)]


def test_pushed_records_are_indexed_for_whom_their_tables_say(world: World):
    pharmacy = Pharmacy(world)
    pharmacy.plan()
    pharmacy.receive(1_000_000)
    visit = pharmacy.schedule(DAY1).json
    handset = Handset(pharmacy)
    handset.sync_pull()
    rows = session_rows(handset, visit["id"], pharmacy.product_id)
    assert handset.push(rows).status_code == 200

    for table, changes in rows.items():
        ids = [uuid.UUID(row["id"]) for row in changes["created"]]
        told = _indexed(world, ids, table)
        assert told == {who.record_id: who for who in
                        BY_NAME[table].audience(world.session, ids)}
        assert {who.patient_id for who in told.values()} == {uuid.UUID(visit["patient_id"])}


def test_an_entry_rolled_back_with_its_savepoint_is_never_indexed(world: World):
    pharmacy = Pharmacy(world)
    world.commit()
    kept_before = _append(world, pharmacy, _movement(pharmacy, Kind.RECEIVE, "supplier", VAULT))
    undone = world.session.begin_nested()
    lost = _append(world, pharmacy, _movement(pharmacy, Kind.RECEIVE, "supplier", VAULT))
    undone.rollback()
    kept_after = _append(world, pharmacy, _movement(pharmacy, Kind.RECEIVE, "supplier", VAULT))
    world.commit()

    # The entry appended before the savepoint is still numbered, its audience read back.
    assert set(_indexed(world, [kept_before, lost, kept_after])) == {kept_before, kept_after}

"""The safeguards run inline on writes and in the population scan, one flag per finding."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, text, update

from backend.accounts.models import Role
from backend.cli import cli
from backend.custody import checkpoints
from backend.custody.chain import plain_value
from backend.custody.models import CustodyEntry
from backend.custody.verify import Slice, last_verified, record_verified, verify, verify_slice
from backend.flags.models import Flag
from backend.jobs.scheduler import SCHEDULE
from backend.scan import chain, loaders
from backend.scan import service as scan
from safeguards.findings import Severity
from tests.backend.administration.test_sessions import PRE, Session, dose
from tests.factories import PASSWORD, Pharmacy, World, signed_payload

AFTER = datetime(2026, 11, 3, 16, 0, tzinfo=UTC)


def _flags(world: World, org_id: uuid.UUID, rule_id: str | None = None) -> list[Flag]:
    query = select(Flag).where(Flag.organisation_id == org_id)
    if rule_id:
        query = query.where(Flag.rule_id == rule_id)
    return list(world.session.scalars(query))


def _later(world: World, visit: Session) -> None:
    """Move to after the session, as phones sync: no device clock then looks ahead."""
    world.rt.clock.set(AFTER)
    visit.phone_headers = visit.pharmacy.as_(Role.NURSE, visit.pharmacy.device_id)


def _dosed(world: World, stock_ug: int = 1_000_000) -> Session:
    """Return a visit with pre-dose vitals and a 35 mg dose recorded from the nurse's phone."""
    visit = Session(world, stock_ug=stock_ug)
    _later(world, visit)
    assert visit.post("pre-dose", visit.signed(PRE)).status_code == 201
    given = visit.post("dose", visit.signed(dose(visit.pharmacy.product_id)))
    assert given.status_code == 201, given.json
    return visit


def _waste(visit: Session, quantity_ug: int):
    pharmacy = visit.pharmacy
    witness = {"user_id": str(pharmacy.users[Role.PHARMACIST].id), "password": PASSWORD}
    return pharmacy.post(Role.NURSE, {
        "kind": "waste", "quantity_ug": quantity_ug, "visit_id": visit.visit["id"],
        "occurred_at": "2026-11-03T15:55:00+00:00", "witnesses": [witness]})


def test_a_waste_larger_than_the_vial_left_is_flagged_as_it_is_recorded(world: World):
    visit = _dosed(world)
    # 500 mg vial, 35 mg given: 465 mg can be left, not 470.
    assert _waste(visit, 470_000).status_code == 201
    [flag] = _flags(world, visit.pharmacy.org.id, "waste.exceeds_remainder")
    assert flag.subject_kind in {"visit", "nurse"}
    assert flag.evidence["nurse_id"] == str(visit.pharmacy.nurse.id)


def test_a_waste_that_fits_the_vial_raises_no_waste_flag(world: World):
    visit = _dosed(world)
    assert _waste(visit, 465_000).status_code == 201
    assert [f.rule_id for f in _flags(world, visit.pharmacy.org.id)
            if f.rule_id.startswith("waste.")] == []


def test_the_scan_reads_the_organisations_facts_and_a_second_scan_adds_no_flag(world: World):
    visit = _dosed(world)
    assert _waste(visit, 470_000).status_code == 201
    org_id = visit.pharmacy.org.id
    first = scan.scan_organisation(world.session, world.rt, org_id,
                                   since=world.rt.clock.now() - timedelta(days=30))
    assert (first.facts["recent_doses"], first.facts["recent_wastes"],
            first.facts["recent_visits"]) == (1, 1, 1)
    assert (first.facts["doses"], first.facts["activity"], first.facts["witness_pairs"],
            first.facts["clocks"]) == (1, 1, 1, 1)
    assert first.by_rule == {"waste.exceeds_remainder": 1}
    # The inline check raised it already: the scan refreshed that flag instead of adding one.
    assert first.new_flags == 0
    before = {(f.rule_id, f.dedup_key) for f in _flags(world, org_id)}
    again = scan.scan_organisation(world.session, world.rt, org_id,
                                   since=world.rt.clock.now() - timedelta(days=30))
    assert again.new_flags == 0
    assert {(f.rule_id, f.dedup_key) for f in _flags(world, org_id)} == before
    assert set(again.seconds) == {"load", "ledger", "rules", "flags"}


def test_witness_pairs_count_the_recent_period_apart_in_the_database(world: World):
    visit = _dosed(world)
    assert _waste(visit, 400_000).status_code == 201
    org_id, now = visit.pharmacy.org.id, world.rt.clock.now()
    witness = str(visit.pharmacy.users[Role.PHARMACIST].id)

    def pairs(as_of: datetime, recent_days: int | None) -> list[tuple]:
        scope = loaders.Scope(org_id, as_of, as_of - timedelta(days=30))
        return [(p.witness_id, p.together, p.nurse_wastes, p.recent_together, p.recent_wastes)
                for p in loaders._witness_pairs(world.session, scope, recent_days)]

    # The waste (15:55, an hour before now) is within the last 7 days, and within the
    # last day; 8 days on it is in the window but no longer recent; with no period, none is.
    assert pairs(now, 7) == [(witness, 1, 1, 1, 1)]
    assert pairs(now, 1) == [(witness, 1, 1, 1, 1)]
    assert pairs(now + timedelta(days=8), 7) == [(witness, 1, 1, 0, 0)]
    assert pairs(now, None) == [(witness, 1, 1, 0, 0)]
    facts = loaders.load_population(world.session, loaders.Scope(
        org_id, now, now - timedelta(days=30)), bag_return_hours=24)
    assert [(p.recent_together, p.recent_wastes) for p in facts.witness_pairs] == [(1, 1)]


def _timed_waste(visit: Session, witness: tuple, occurred_at: str, attested_at: datetime):
    """Post a waste of the visit whose witness's phone confirmed it at `attested_at`."""
    pharmacy = visit.pharmacy
    body = {"id": str(uuid.uuid4()), "kind": "waste", "quantity_ug": 5_000,
            "visit_id": visit.visit["id"], "occurred_at": occurred_at,
            "product_id": pharmacy.product_id, "lot": "L1", "expiry": "2028-01-31"}
    user_id, device_id, phone = witness
    signed = {**signed_payload(pharmacy, body), "attested_at": plain_value(attested_at)}
    response = pharmacy.post(Role.NURSE, {**body, "witnesses": [
        {"user_id": str(user_id), "device_id": str(device_id),
         "attested_at": attested_at.isoformat(), "signature": phone.sign(signed)}]})
    assert response.status_code == 201, response.json
    return body["id"]


def test_a_witness_phone_confirming_long_after_the_waste_is_flagged_by_the_scan(world: World):
    visit = _dosed(world)
    pharmacy = visit.pharmacy
    nurse = world.user(pharmacy.org, Role.NURSE)
    witness = (nurse.id, *world.device(pharmacy.org, nurse))
    watched = _timed_waste(visit, witness, "2026-11-03T15:50:00+00:00",
                           datetime(2026, 11, 3, 15, 52, tzinfo=UTC))
    late = _timed_waste(visit, witness, "2026-11-03T15:55:00+00:00",
                        datetime(2026, 11, 3, 18, 25, tzinfo=UTC))
    world.rt.clock.set(datetime(2026, 11, 4, 2, 0, tzinfo=UTC))
    org_id, now = pharmacy.org.id, world.rt.clock.now()
    facts = loaders.load_population(world.session, loaders.Scope(
        org_id, now, now - timedelta(days=30)), bag_return_hours=24)
    assert sorted((a.waste_id, a.witness_id, a.device_id, a.attested_at, a.patient_id)
                  for a in facts.attestations) == sorted(
        (waste, str(nurse.id), str(witness[1]), at, pharmacy.patient_id)
        for waste, at in ((watched, datetime(2026, 11, 3, 15, 52, tzinfo=UTC)),
                          (late, datetime(2026, 11, 3, 18, 25, tzinfo=UTC))))
    result = scan.scan_organisation(world.session, world.rt, org_id)
    assert result.facts["attestations"] == 2
    [flag] = _flags(world, org_id, "waste.witness_late")
    assert (flag.nurse_id, flag.evidence["waste_id"], flag.evidence["witness_id"],
            flag.evidence["late_minutes"]) == (pharmacy.nurse.id, late, str(nurse.id), "150.0")


def _tamper(connection, org_id: uuid.UUID, seq: int) -> None:
    """Take 1 mg off the stored entry at `seq`, as someone with database access could."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("ALTER TABLE custody_entry DISABLE TRIGGER USER"))
    else:
        for name in ("custody_entry_no_update", "custody_entry_no_delete"):
            connection.execute(text(f"DROP TRIGGER {name}"))
    connection.execute(update(CustodyEntry).where(
        CustodyEntry.organisation_id == org_id, CustodyEntry.seq == seq).values(
        quantity_ug=CustodyEntry.quantity_ug - 1_000))


def test_the_scan_flags_a_tampered_ledger_once(world: World, connection):
    visit = _dosed(world)
    org_id = visit.pharmacy.org.id
    assert _flags(world, org_id, "custody.ledger_break") == []
    _tamper(connection, org_id, 2)
    for _ in range(2):
        scan.scan_organisation(world.session, world.rt, org_id)
    [flag] = _flags(world, org_id, "custody.ledger_break")
    assert flag.severity == Severity.CRITICAL
    assert flag.evidence["seq"] == 2
    assert flag.subject_kind == "organisation"


def test_an_old_tampered_entry_is_found_within_a_week_of_scans(world: World, connection):
    visit = _dosed(world)
    org_id = visit.pharmacy.org.id
    head = world.session.scalar(select(func.max(CustodyEntry.seq)).where(
        CustodyEntry.organisation_id == org_id))
    # Long after: the entry is no longer recent, so only the rolling slice can reach it.
    world.rt.clock.set(AFTER + timedelta(days=10))
    _tamper(connection, org_id, head)
    nights = 0
    while not _flags(world, org_id, "custody.ledger_break"):
        assert nights < chain.SLICES, "a whole week of scans missed the changed entry"
        scan.scan_organisation(world.session, world.rt, org_id)
        nights += 1
    [flag] = _flags(world, org_id, "custody.ledger_break")
    assert flag.evidence["seq"] == head


def test_a_slice_without_the_changed_entry_verifies_and_one_with_it_does_not(
        world: World, connection):
    visit = _dosed(world)
    org_id = visit.pharmacy.org.id
    _tamper(connection, org_id, 2)
    rt, long_ago = world.rt, AFTER + timedelta(days=30)

    def report(first: int, last: int):
        return verify_slice(world.session, org_id, rt.keys.verifying_keys(),
                            rt.checkpoint_dir, Slice(first, last, long_ago))

    assert report(1, 1).ok
    assert report(3, 3).ok
    broken = report(1, 3)
    assert (broken.ok, broken.problem.seq) == (False, 2)


def _signed_and_verified(world: World, org_id: uuid.UUID) -> tuple[int, str]:
    """Sign the head as the minute job does, verify the whole chain and record it."""
    checkpoint = checkpoints.sign_head(world.session, world.rt, org_id, world.rt.checkpoint_dir)
    report = verify(world.session, org_id, world.rt.keys.verifying_keys(),
                    world.rt.checkpoint_dir)
    record_verified(world.session, world.rt.clock.now(), report)
    world.session.commit()
    assert report.verified_to == (checkpoint.seq, checkpoint.head_hash), report
    return report.verified_to


def test_the_scan_walks_on_from_the_last_verified_checkpoint_and_records_how_far(
        world: World, connection):
    visit = _dosed(world)
    org_id = visit.pharmacy.org.id
    verified_seq, _ = _signed_and_verified(world, org_id)
    assert visit.pharmacy.receive(1_000).status_code == 201
    signed = checkpoints.sign_head(world.session, world.rt, org_id, world.rt.checkpoint_dir)
    world.session.commit()
    [incremental] = [part for part, walks_on in chain._slices(
        world.session, world.rt, org_id, world.rt.clock.now()) if walks_on]
    assert (incremental.first, incremental.last) == (verified_seq + 1, signed.seq)
    scan.scan_organisation(world.session, world.rt, org_id)
    assert last_verified(world.session, org_id) == (signed.seq, signed.head_hash)
    # Changed past the record: the next night's incremental part names it.
    assert visit.pharmacy.receive(2_000).status_code == 201
    _tamper(connection, org_id, signed.seq + 1)
    scan.scan_organisation(world.session, world.rt, org_id)
    [flag] = _flags(world, org_id, "custody.ledger_break")
    assert flag.evidence["seq"] == signed.seq + 1
    assert last_verified(world.session, org_id) == (signed.seq, signed.head_hash)


def test_a_disabled_rule_raises_nothing_inline_or_in_the_scan(world: World):
    visit = Session(world, stock_ug=1_000_000)
    _later(world, visit)
    pharmacy = visit.pharmacy
    off = pharmacy.client.patch("/api/v1/safeguards/rules/waste.exceeds_remainder",
                                headers=pharmacy.as_(Role.COMPLIANCE),
                                json={"mode": "disabled"})
    assert off.status_code == 200, off.json
    assert visit.post("pre-dose", visit.signed(PRE)).status_code == 201
    assert visit.post("dose", visit.signed(dose(pharmacy.product_id))).status_code == 201
    assert _waste(visit, 470_000).status_code == 201
    scan.scan_organisation(world.session, world.rt, pharmacy.org.id)
    assert _flags(world, pharmacy.org.id, "waste.exceeds_remainder") == []


def test_the_scan_is_a_nightly_job():
    [spec] = [spec for spec in SCHEDULE if spec.name == "population_scan"]
    assert spec.seconds == 86_400
    assert spec.body is scan.nightly_scan


def test_vigil_scan_prints_each_organisation_and_is_idempotent(app, world: World):
    visit = _dosed(world)
    assert _waste(visit, 470_000).status_code == 201
    org = visit.pharmacy.org
    runner = app.test_cli_runner()
    first = runner.invoke(cli, ["scan", "--org", org.slug, "--since", "2026-10-01"])
    assert first.exit_code == 0, first.output
    assert f"{org.slug}: since 2026-10-01 00:00" in first.output
    assert "waste.exceeds_remainder: 1" in first.output
    count = world.session.scalar(select(func.count()).select_from(Flag).where(
        Flag.organisation_id == org.id))
    second = runner.invoke(cli, ["scan", "--org", org.slug, "--since", "2026-10-01"])
    assert second.exit_code == 0, second.output
    assert "0 new flag(s)" in second.output
    assert world.session.scalar(select(func.count()).select_from(Flag).where(
        Flag.organisation_id == org.id)) == count


def test_vigil_scan_refuses_an_unknown_organisation(app):
    result = app.test_cli_runner().invoke(cli, ["scan", "--org", "no-such-org"])
    assert result.exit_code != 0
    assert "no-such-org" in result.output


def test_stock_left_in_an_idle_bag_past_the_deadline_is_flagged(world: World):
    pharmacy = Pharmacy(world)
    assert pharmacy.receive(1_000_000).status_code == 201
    assert pharmacy.dispense(100_000).status_code == 201
    dispensed_at = world.rt.clock.now()
    org_id = pharmacy.org.id
    # The nurse has no visit to use it at; the policy gives her 2 h to bring it back.
    world.rt.clock.set(dispensed_at + timedelta(hours=2, minutes=-1))
    scan.scan_organisation(world.session, world.rt, org_id)
    assert _flags(world, org_id, "custody.unreturned_stock") == []
    world.rt.clock.set(dispensed_at + timedelta(hours=2, minutes=1))
    result = scan.scan_organisation(world.session, world.rt, org_id)
    assert result.facts["holdings"] == 1
    [flag] = _flags(world, org_id, "custody.unreturned_stock")
    assert flag.evidence["nurse_id"] == str(pharmacy.nurse.id)
    assert flag.evidence["quantity_ug"] == 100_000

"""The labelled simulator: a reproducible world, its ground truth, and the report's arithmetic."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from flask import Flask
from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session

from backend import simulate
from backend.accounts import service as accounts
from backend.accounts.models import Role, User
from backend.administration.models import DoseRecord
from backend.cli import cli
from backend.clock import FixedClock
from backend.custody.chain import GENESIS, HASHED_FIELDS, entry_hash
from backend.custody.ledger import is_balanced
from backend.custody.models import CustodyBalance, CustodyEntry
from backend.custody.verify import verify
from backend.flags.models import Flag
from backend.patients.models import Patient as PatientModel
from backend.patients.models import PatientWeight
from backend.plans.models import PlanVersion
from backend.simulate import truth as ground_truth
from backend.simulate.behaviour import (
    ALL_PATTERNS_NURSES,
    MIN_NURSES,
    NURSE_PATTERNS,
    PATTERNS,
)
from backend.simulate.report import FlagFact, render, score
from backend.simulate.truth import ExpectedEvent, Pattern, Truth
from backend.simulate.world import TIMEZONE
from backend.visits.models import Visit
from tests.backend.conftest import START, make_app

# Enough nurses for every pattern (behaviour.ALL_PATTERNS_NURSES) and patients for each to act.
SMALL = simulate.Params("sim-small", nurses=16, patients=32, days=28, seed=7)
TINY = {"nurses": 16, "patients": 16, "days": 10, "seed": 11}


@dataclass
class Simulated:
    """A simulated organisation, the app that made it, and the connection it lives on."""

    app: Flask
    connection: Connection
    truth: Truth

    def session(self) -> Session:
        """Return a fresh session that sees what the simulation committed."""
        return self.app.extensions["vigil.db"].sessions(
            bind=self.connection, join_transaction_mode="create_savepoint")

    @property
    def organisation_id(self):
        """Return the simulated organisation's id."""
        with self.session() as session:
            return accounts.organisation_by_slug(session, self.truth.organisation).id


def _generate(app: Flask, instance: Path, params: simulate.Params) -> Truth:
    return simulate.generate(app.extensions["vigil.db"].sessions,
                             app.extensions["vigil.runtime"], instance, params)


@pytest.fixture(scope="module")
def simulated(engine, database_url, instance_path):
    """Simulate a small organisation once per database, in a transaction rolled back after."""
    with engine.connect() as connection:
        outer = connection.begin()
        app = make_app(database_url, instance_path, FixedClock(START))
        app.extensions["vigil.db"].use_connection(connection)
        yield Simulated(app, connection, _generate(app, instance_path, SMALL))
        outer.rollback()
        app.extensions["vigil.db"].engine.dispose()


def test_the_ground_truth_names_every_pattern_with_its_subjects(simulated, instance_path):
    written = ground_truth.read(ground_truth.truth_path(instance_path, SMALL.slug))
    assert [pattern.name for pattern in written.patterns] == list(PATTERNS)
    for pattern in written.patterns:
        assert pattern.started_at is not None, pattern.name
        assert pattern.ids(), pattern.name
    assert written.pattern("tampered_ledger").subjects["entry_ids"]
    assert written.pattern("drifting_clock").subjects["device_ids"]
    assert written.pattern("escalating_patient").subjects["patient_ids"]
    assert written.counts["sessions"] > written.honest_sessions > 0
    assert written.counts["nurses"] == SMALL.nurses
    assert written.counts["patients"] == SMALL.patients


def test_each_new_family_has_its_pattern_with_what_it_touched(simulated, instance_path):
    written = ground_truth.read(ground_truth.truth_path(instance_path, SMALL.slug))
    diverter = written.pattern("pharmacy_diverter")
    assert len(diverter.subjects["user_ids"]) == 1 and diverter.subjects["entry_ids"]
    # What she took off the shelf she adjusted away at her counts (deliveries, which she
    # under-receives, are too rare in a world this small to count on one).
    assert diverter.amounts["adjusted_down_ug"] == diverter.amounts["taken_ug"] > 0
    prescriber = written.pattern("high_dose_prescriber")
    assert prescriber.subjects["plan_ids"] and len(prescriber.subjects["user_ids"]) == 1
    assert len(prescriber.subjects["patient_ids"]) == len(prescriber.subjects["plan_ids"])
    for name in ("off_hours_nurse", "weight_inflater", "share_over_waster",
                 "cancelled_stock_keeper"):
        pattern = written.pattern(name)
        assert len(pattern.subjects["nurse_ids"]) == 1, name
        assert pattern.subjects["visit_ids"] and pattern.sessions, name
    assert written.pattern("weight_inflater").subjects["patient_ids"]
    assert written.pattern("weight_inflater").amounts["kept_ug"] > 0
    assert written.pattern("share_over_waster").subjects["entry_ids"]
    assert written.pattern("cancelled_stock_keeper").amounts["kept_ug"] > 0
    assert written.pattern("wrong_seal_refuser").amounts["refusals"] >= 3
    # Each nurse acts in one pattern at most, and the patterns' people are not honest ones.
    nurses = [nurse for pattern in written.patterns for nurse in pattern.subjects["nurse_ids"]
              if pattern.name != "friendly_witness"]
    assert len(nurses) == len(set(nurses))


def test_every_flag_is_raised_on_the_simulated_clock(simulated):
    # A service that judges before its unit ends (a count naming its flags) judges by the
    # simulation's clock too, never by the wall's.
    truth = simulated.truth
    with simulated.session() as session:
        seen = list(session.scalars(select(Flag.first_seen_at).where(
            Flag.organisation_id == simulated.organisation_id)))
    assert seen
    for at in seen:
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        assert truth.started_at <= at <= truth.ended_at + timedelta(days=1), at


def _hours(simulated: Simulated, nurse_id: str) -> list[int]:
    """Return the local hours at which the nurse's doses began."""
    with simulated.session() as session:
        return [started.astimezone(ZoneInfo(TIMEZONE)).hour for started in session.scalars(
            select(DoseRecord.infusion_started_at).where(
                DoseRecord.organisation_id == simulated.organisation_id,
                DoseRecord.nurse_id == uuid.UUID(nurse_id)))]


def test_the_off_hours_nurse_doses_late_while_honest_nurses_keep_daytime(simulated):
    [late] = simulated.truth.pattern("off_hours_nurse").subjects["nurse_ids"]
    assert any(hour >= 20 for hour in _hours(simulated, late))
    honest = {str(nurse) for nurse in _nurse_ids(simulated)} - simulated.truth.injected_ids()
    assert honest
    for nurse_id in honest:
        assert all(7 <= hour < 21 for hour in _hours(simulated, nurse_id)), nurse_id


def _nurse_ids(simulated: Simulated) -> list[uuid.UUID]:
    with simulated.session() as session:
        return list(session.scalars(select(User.id).where(
            User.organisation_id == simulated.organisation_id, User.role == Role.NURSE)))


def test_honest_nurses_give_each_dose_as_its_own_plan_sets_it(simulated):
    # The high-dose prescriber's plans too: a nurse who follows them gives what they set.
    injected = simulated.truth.injected_ids()
    high = set(simulated.truth.pattern("high_dose_prescriber").subjects["patient_ids"])
    with simulated.session() as session:
        doses = session.execute(select(
            DoseRecord.nurse_id, Visit.patient_id, DoseRecord.ug_per_kg,
            PlanVersion.dose_ug_per_kg).join(Visit, Visit.id == DoseRecord.visit_id).join(
            PlanVersion, PlanVersion.id == DoseRecord.plan_version_id).where(
            DoseRecord.organisation_id == simulated.organisation_id)).all()
    honest = [dose for dose in doses if str(dose.nurse_id) not in injected]
    assert any(str(dose.patient_id) in high for dose in honest)
    for dose in honest:
        assert abs(dose.ug_per_kg / dose.dose_ug_per_kg - 1) < Decimal("0.02"), dose


def test_honest_weights_vary_slightly_and_the_inflated_ones_climb(simulated):
    [inflater] = simulated.truth.pattern("weight_inflater").subjects["nurse_ids"]
    inflated = set(simulated.truth.pattern("weight_inflater").subjects["patient_ids"])
    with simulated.session() as session:
        rows = session.execute(select(PatientWeight.patient_id, PatientWeight.weight_g,
                                      PatientWeight.recorded_by_id).join(
            PatientModel, PatientModel.id == PatientWeight.patient_id).where(
            PatientModel.organisation_id == simulated.organisation_id)
            .order_by(PatientWeight.measured_at)).all()
    by_patient: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for patient_id, weight_g, by in rows:
        by_patient[str(patient_id)].append((weight_g, str(by)))
    for patient_id, weighed in by_patient.items():
        steps = [abs(b[0] - a[0]) / a[0] for a, b in itertools.pairwise(weighed)]
        if patient_id in inflated:
            assert any(by == inflater for _, by in weighed)
            assert weighed[-1][0] > weighed[0][0] * 1.04, patient_id
        else:
            assert all(step < 0.01 for step in steps), patient_id


def _stored_entries(simulated: Simulated) -> list[dict]:
    with simulated.session() as session:
        # Read through the model, which decrypts the details the hash covers.
        return [{name: getattr(entry, name) for name in
                 (*HASHED_FIELDS, "prev_hash", "entry_hash")}
                for entry in session.scalars(select(CustodyEntry).where(
                    CustodyEntry.organisation_id == simulated.organisation_id)
                    .order_by(CustodyEntry.seq))]


def test_the_ledger_verifies_except_for_exactly_the_tampered_row(simulated):
    entries = _stored_entries(simulated)
    [tampered_id] = simulated.truth.pattern("tampered_ledger").subjects["entry_ids"]
    mismatched, previous = [], GENESIS
    for entry in entries:
        assert entry["prev_hash"] == previous
        if entry_hash(previous, entry) != entry["entry_hash"]:
            mismatched.append(str(entry["id"]))
        previous = entry["entry_hash"]
    assert mismatched == [tampered_id]
    rt = simulated.app.extensions["vigil.runtime"]
    with simulated.session() as session:
        report = verify(session, simulated.organisation_id, rt.keys.verifying_keys(),
                        rt.checkpoint_dir)
    seq = next(entry["seq"] for entry in entries if str(entry["id"]) == tampered_id)
    assert (report.ok, report.problem.seq) == (False, seq)


def test_balances_never_go_negative(simulated):
    running: dict[tuple, int] = defaultdict(int)
    for entry in _stored_entries(simulated):
        for holder, sign in ((entry["from_holder"], -1), (entry["to_holder"], 1)):
            if is_balanced(holder):
                key = (holder, entry["product_id"], entry["lot"])
                running[key] += sign * entry["quantity_ug"]
                assert running[key] >= 0, (entry["seq"], key)
    with simulated.session() as session:
        assert session.scalar(select(func.min(CustodyBalance.quantity_ug)).where(
            CustodyBalance.organisation_id == simulated.organisation_id)) >= 0


def test_the_report_scores_the_stored_flags(simulated, instance_path):
    with simulated.session() as session:
        text = simulate.report(session, instance_path, SMALL.slug)
    for name in PATTERNS:
        assert name in text
    assert "honest population:" in text


# What seed 7 gives at the SMALL size: the ground truth (server-made ids by first appearance,
# without the slug and the time it took) and the report (without the time it took). A change
# that speeds the simulator up must leave both as they are; one that means to change what is
# simulated updates these figures with the reason.
SMALL_TRUTH_SHA256 = "e274c710b7b12d0710fa704d113ecc8839200483df0d26506b56b3890a3f360c"
SMALL_REPORT_SHA256 = "73ea52a39b1e806ca3452d5e7ee17bc2e7b9fab89f24de25fd95c24e8de22f72"
SMALL_REPORT_LINES = [
    "  caught within 7 days of their start: 13 of 14",
    "honest population: 26 sessions, 0 false positives (0.000 per 1,000 sessions; the target "
    "is at most 1)",
    "overall: precision 1.000, recall 1.000"]
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _without_server_ids(text: str) -> str:
    """Replace each id by the order it first appears in: server-made ids differ between runs."""
    seen: dict[str, int] = {}
    return UUID.sub(lambda match: f"id{seen.setdefault(match.group(0), len(seen))}", text)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_the_seed_pins_the_ground_truth_and_the_report(simulated, instance_path):
    written = json.loads(ground_truth.truth_path(instance_path, SMALL.slug).read_text())
    del written["organisation"], written["generation_seconds"]
    with simulated.session() as session:
        report = simulate.report(session, instance_path, SMALL.slug)
    report = _without_server_ids(re.sub(r", generated in [0-9.]+ s", "", report))
    figures = [line for line in report.splitlines()
               if line.startswith(("  caught within", "honest population", "overall"))]
    assert figures == SMALL_REPORT_LINES
    assert _sha256(report) == SMALL_REPORT_SHA256, report
    assert _sha256(_without_server_ids(json.dumps(written, indent=1))) == SMALL_TRUTH_SHA256


def _fingerprint(app: Flask, slug: str) -> list[tuple]:
    """Return what a seed decides: every movement's kind, lot, amount and times, in order."""
    with app.extensions["vigil.db"].sessions() as session:
        org = accounts.organisation_by_slug(session, slug)
        return [tuple(row) for row in session.execute(select(
            CustodyEntry.seq, CustodyEntry.kind, CustodyEntry.lot, CustodyEntry.quantity_ug,
            CustodyEntry.occurred_at, CustodyEntry.received_at).where(
            CustodyEntry.organisation_id == org.id).order_by(CustodyEntry.seq))]


def test_a_seed_reproduces_the_same_world(simulated, instance_path):
    app = simulated.app
    first = _generate(app, instance_path, simulate.Params("sim-once", **TINY))
    again = _generate(app, instance_path, simulate.Params("sim-again", **TINY))
    assert _fingerprint(app, "sim-once") == _fingerprint(app, "sim-again")
    assert first.counts == again.counts
    assert [p.name for p in first.patterns] == list(PATTERNS)
    assert [(p.started_at, p.sessions, p.amounts) for p in first.patterns] == [
        (p.started_at, p.sessions, p.amounts) for p in again.patterns]


def test_the_command_simulates_and_reports(tmp_path, monkeypatch):
    monkeypatch.setenv("VIGIL_INSTANCE_PATH", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'sim.sqlite3'}")
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    made = runner.invoke(cli, ["simulate", "--org", "sim-cli", "--nurses", "7",
                               "--patients", "6", "--days", "7"])
    assert made.exit_code == 0, (made.output, made.exception)
    written = ground_truth.read(tmp_path / "simulations" / "sim-cli.json")
    # Seven nurses leave no room for the nurse patterns of issue 17: the rest are injected.
    assert [p.name for p in written.patterns] == [
        name for name in PATTERNS if name not in NURSE_PATTERNS]
    assert len(NURSE_PATTERNS) <= ALL_PATTERNS_NURSES - MIN_NURSES
    scored = runner.invoke(cli, ["simulate", "--report", "--org", "sim-cli"])
    assert scored.exit_code == 0, (scored.output, scored.exception)
    assert "injected patterns (days to catch" in scored.output
    missing = runner.invoke(cli, ["simulate", "--report", "--org", "nowhere"])
    assert missing.exit_code == 1
    assert "no ground truth" in missing.output


# The report's arithmetic, on hand-made ground truth and flags.

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
NURSE, FRIEND, HONEST = ("11111111-1111-4111-8111-111111111111",
                         "22222222-2222-4222-8222-222222222222",
                         "33333333-3333-4333-8333-333333333333")
VISIT, ENTRY = "44444444-4444-4444-8444-444444444444", "55555555-5555-4555-8555-555555555555"


def _truth() -> Truth:
    skimming = Pattern("skimming_nurse", "skims", started_at=T0)
    skimming.act(T0, nurse_ids=NURSE)
    witness = Pattern("friendly_witness", "signs for a friend", started_at=T0)
    witness.act(T0, nurse_ids=[FRIEND], entry_ids=ENTRY)
    never = Pattern("drifting_clock", "never caught")
    never.act(T0 + timedelta(days=3), device_ids="66666666-6666-4666-8666-666666666666")
    return Truth(organisation="hand", seed=1, nurses=3, patients=2, days=10, started_at=T0,
                 patterns=[skimming, witness, never], honest_sessions=2000,
                 expected=[ExpectedEvent(VISIT, "monitoring.alarming_vitals", "spike")])


def _flag(rule: str, at: datetime, subject: str = VISIT, shadow: bool = False,
          **evidence: str) -> FlagFact:
    return FlagFact(rule, "visit", subject, evidence, shadow, at)


def test_the_report_finds_catches_delays_and_false_positives():
    flags = [
        _flag("waste.peer_outlier", T0 + timedelta(days=2), NURSE),
        _flag("custody.bag_unbalanced", T0 + timedelta(hours=5), subject=HONEST,
              holder=f"bag:{NURSE}"),
        _flag("custody.bag_unbalanced", T0 - timedelta(days=1), subject=HONEST,
              nurse_id=NURSE),
        _flag("custody.bag_unbalanced", T0, subject=HONEST),
        _flag("waste.witness_pair", T0 + timedelta(days=1), entry_ids=f"{ENTRY},x"),
        _flag("monitoring.alarming_vitals", T0, VISIT),
        _flag("monitoring.alarming_vitals", T0, HONEST),
        _flag("waste.peer_outlier", T0, "device:66666666-6666-4666-8666-666666666666",
              shadow=True),
    ]
    report = score(_truth(), flags)
    results = {result.name: result for result in report.patterns}
    assert results["skimming_nurse"].caught
    assert results["skimming_nurse"].delay == timedelta(hours=5)
    assert results["skimming_nurse"].rule_ids == ("custody.bag_unbalanced",
                                                  "waste.peer_outlier")
    assert results["friendly_witness"].delay == timedelta(days=1)
    assert not results["drifting_clock"].caught
    rules = {stats.rule_id: stats for stats in report.rules}
    assert rules["custody.bag_unbalanced"].verdicts == {
        "expected": 0, "injected": 1, "early": 1, "false_positive": 1}
    assert rules["monitoring.alarming_vitals"].verdicts == {
        "expected": 1, "injected": 0, "early": 0, "false_positive": 1}
    assert report.false_positives == 2
    assert report.per_thousand(report.false_positives) == Decimal("1.000")
    assert report.precision == Decimal("0.571")
    assert report.recall == Decimal("0.667")
    [shadow] = report.shadow_rules
    assert (shadow.rule_id, shadow.flags) == ("waste.peer_outlier", 1)
    text = render(report, _truth())
    assert "skimming_nurse         CAUGHT  after 5 h 0 min    (  0.2 days)" in text
    assert "drifting_clock         missed" in text
    assert "caught within 7 days of their start: 2 of 3" in text


def test_a_flag_on_a_shadow_rule_catches_nothing():
    report = score(_truth(), [_flag("waste.peer_outlier", T0 + timedelta(days=1), NURSE,
                                    shadow=True)])
    assert not any(result.caught for result in report.patterns)
    assert report.precision is None
    assert report.recall == Decimal("0.000")


def test_a_broken_chain_names_the_tampered_entry_by_its_seq():
    tampered = Pattern("tampered_ledger", "a receipt lowered")
    tampered.act(T0, entry_ids=ENTRY, entry_seqs=12)
    truth = Truth(organisation="hand", seed=1, nurses=3, patients=2, days=10, started_at=T0,
                  patterns=[tampered], honest_sessions=100)
    report = score(truth, [
        FlagFact("custody.ledger_break", "organisation", HONEST, {"seq": 12}, False,
                 T0 + timedelta(days=4)),
        FlagFact("custody.ledger_break", "organisation", HONEST, {"seq": 13}, False,
                 T0 + timedelta(days=4))])
    [result] = report.patterns
    assert (result.caught, result.delay) == (True, timedelta(days=4))
    assert report.false_positives == 1


def test_the_ground_truth_survives_the_round_trip(tmp_path):
    truth = _truth()
    truth.pattern("skimming_nurse").add("skimmed_ug", 1500)
    path = ground_truth.truth_path(tmp_path, "hand")
    ground_truth.write(truth, path)
    assert ground_truth.read(path) == truth

"""Every rule through the engine over one organisation's facts: modes, evidence, stable keys."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from safeguards import (
    ALL,
    LedgerBreak,
    Mode,
    NurseActivity,
    Policy,
    QuarantinedEvent,
    SessionFacts,
    Vitals,
    WitnessAttestation,
    WitnessPair,
    run,
)
from safeguards.facts import PlanFact, SessionReadings, VaultMovement, Weighing, WorkEvent
from safeguards.rules.monitoring import MONITORING
from tests.safeguards.factories import (
    AS_OF,
    NORTH_1KM,
    T0,
    clock,
    count,
    dose,
    doses_every,
    evv,
    facts,
    found,
    holding,
    loss,
    refusal,
    shift,
    visit,
    waste,
    with_quantities,
)

RULE_IDS = [
    "monitoring.bp_hold_without_justification", "monitoring.dose_without_pre_dose_vitals",
    "dosing.above_plan_max", "dosing.above_ceiling", "monitoring.infusion_short",
    "monitoring.early_discharge", "monitoring.discharge_not_recovered",
    "monitoring.missing_observations", "monitoring.weight_stale", "monitoring.alarming_vitals",
    "dosing.creep", "dosing.low_dose_large_waste", "dosing.below_plan_run",
    "frequency.interval_below_min", "frequency.window_exceeded",
    "frequency.dose_without_visit", "frequency.extra_visit_cluster",
    "visit.missed", "scheduling.frequency_override", "dosing.off_plan_product",
    "custody.administer_discrepancy",
    "custody.bag_unbalanced", "custody.unreturned_stock", "custody.count_discrepancy",
    "custody.loss_reported", "custody.loss_deadline_missed", "custody.ledger_break",
    "sync.quarantined_event", "custody.refusals_repeated",
    "waste.unwitnessed", "waste.witness_pair", "waste.witness_late", "waste.exceeds_remainder",
    "waste.late",
    "waste.rate_outlier", "waste.share_outlier", "waste.share_rise",
    "dosing.plan_ratio_outlier", "activity.low_outlier",
    "evv.check_in_out_of_range", "evv.check_out_out_of_range", "evv.visit_too_short",
    "evv.impossible_travel", "device.clock_drift",
]
# Prescribers follow the devices (issue 17 item 4).
RULE_IDS += ["prescriber.above_protocol", "prescriber.peer_outlier"]
# The pharmacy family comes last (safeguards.rules FAMILIES).
RULE_IDS += ["pharmacy.adjustment_total", "pharmacy.adjustment_after_shortfall",
             "pharmacy.separation_of_duties", "pharmacy.receipt_mismatch",
             "pharmacy.disposal_outlier"]
# Time and plausibility follow (issue 17 items 2 and 3).
RULE_IDS += ["hours.outside_service_hours", "hours.pattern_shift",
             "plausibility.weight_change", "plausibility.weight_before_dose",
             "plausibility.mg_rise_flat_per_kg", "plausibility.flat_readings"]
# The ledger belongs to the organisation: no one person is known behind a break.
WITHOUT_PEOPLE = {"custody.ledger_break"}
# A prescriber against the other prescribers is about the prescriber, over many patients.
WITHOUT_PEOPLE |= {"prescriber.peer_outlier"}
H = timedelta(hours=1)


def session() -> SessionFacts:
    """Return visit-1's session, wrong in every way the monitoring rules look for."""
    return SessionFacts(
        visit_id="visit-1", pre_dose=Vitals(systolic=185, diastolic=80, spo2=98,
                                            respiratory_rate=14, moaas=5),
        pre_dose_at=T0 - timedelta(minutes=10), dose_ug=80_000, ug_per_kg=Decimal("1100"),
        plan_max_dose_ug=70_000, plan_infusion_minutes=40, active_ingredient="ketamine",
        route="IV", infusion_started_at=T0, infusion_ended_at=T0 + timedelta(minutes=20),
        discharged_at=T0 + timedelta(minutes=60), discharge=Vitals(moaas=3))


def team() -> tuple[NurseActivity, ...]:
    """Return twenty alike nurses and four who stand out: by waste, by doses against their
    plans, by a recent rise in waste, by activity."""
    alike = [NurseActivity(f"peer-{n}", "nurse", visits=100, days_worked=40 + n % 3,
                           doses=100, administered_ug=3_500_000, wastes=100,
                           wasted_ug=1_500_000 + 10_000 * (n % 5),
                           ug_per_kg_total=Decimal(50_000 + 100 * (n % 4)),
                           planned_doses=100, planned_ug=3_500_000,
                           planned_given_ug=3_500_000 - 1_000 * (n % 4),
                           recent_since=AS_OF - timedelta(days=14), recent_doses=20,
                           recent_administered_ug=700_000,
                           recent_wasted_ug=300_000 + 2_000 * (n % 5),
                           planned_remainder_ug=1_500_000, recent_planned_remainder_ug=300_000)
             for n in range(20)]
    return (*alike,
            replace(alike[0], nurse_id="nurse-waste", wasted_ug=3_000_000),
            replace(alike[0], nurse_id="nurse-dose", planned_given_ug=2_000_000),
            replace(alike[0], nurse_id="nurse-rise", recent_wasted_ug=700_000),
            replace(alike[0], nurse_id="nurse-idle", days_worked=200))


def vault() -> dict:
    """Return a vault in which every pharmacy rule finds something, at its own severity."""
    counted_at = AS_OF - timedelta(days=5)

    def moved(id_, kind, actor, quantity, from_holder="vault", to_holder="vault", **fields):
        return VaultMovement(id_, kind, actor, from_holder, to_holder, "LOT-V", "product-1",
                             quantity, counted_at, actor_role="pharmacist", **fields)

    return dict(
        vault_since=AS_OF - timedelta(days=90),
        counts=(count(id="count-v", lot="LOT-V", counted_at=counted_at,
                      counted_by_id="pharmacist-2", expected_ug=100_000, counted_ug=85_000,
                      adjustment_id="adjust-b", reason="miscount"),),
        vault_movements=(
            moved("receive-v", "receive", "pharmacist-1", 1_000_000, from_holder="supplier",
                  invoiced_ug=1_010_000),
            moved("adjust-v", "adjust", "pharmacist-1", 15_000, to_holder="count"),
            moved("adjust-b", "adjust", "pharmacist-2", 15_000, from_holder="bag:nurse-1",
                  to_holder="count", count_id="count-v"),
            *(moved(f"destroy-{n}", "destroy", "pharmacist-3", 20_000,
                    to_holder="destruction") for n in range(3)),
            moved("dispense-v", "dispense", "pharmacist-3", 140_000, to_holder="bag:nurse-1")))


def hours_and_plausibility() -> dict:
    """Return night doses after a nurse's daytime history, patient-1 weighed 10 kg heavier
    by nurse-1 just before her dose, and a nurse whose pre-dose readings never vary."""
    def work(number: int, at) -> WorkEvent:
        return WorkEvent(f"work-{number}", "dose", "nurse-1", at, "patient-1",
                         f"work-visit-{number}")

    daytime = [work(n, AS_OF - timedelta(days=40 - n, hours=20)) for n in range(20)]
    # Three nights outside the service hours and five late evenings within them.
    nights = [work(100 + n, AS_OF - timedelta(days=7 - n, hours=7 if n < 3 else 10.5))
              for n in range(8)]
    usual = [Weighing(f"weight-{n}", "patient-1", 70_000, T0 - timedelta(days=21 - 7 * n),
                      "nurse-2") for n in range(3)]
    heavier = Weighing("weight-9", "patient-1", 80_000, T0 - H, "nurse-1", "visit-1")
    same = Vitals(systolic=120, diastolic=80, heart_rate=72, spo2=98)
    flat = [SessionReadings(f"flat-visit-{n}", "nurse-flat", f"patient-{n % 3}",
                            T0 + timedelta(days=n), pre_dose=same) for n in range(10)]
    return dict(work_events=(*daytime, *nights), weighings=(*usual, heavier),
                readings=tuple(flat))


def everything(**more) -> dict:
    """Return facts in which every rule finds something."""
    rising = with_quantities(doses_every(1, 6), [35_000] * 3 + [50_000] * 3)
    low = dose(7, T0 + timedelta(days=20), quantity_ug=10_000, patient_id="patient-2",
               route="IM")
    stray = dose(8, T0 + timedelta(days=25), visit_id=None, patient_id="patient-3",
                 custody_entry_id=None)
    visits = [visit(n, d.given_at, patient_id=d.patient_id)
              for n, d in enumerate([*rising, low], 1)]
    visits[0] = replace(visits[0], checked_out_at=visits[0].checked_in_at + H)
    extras = [visit(20 + n, T0 + timedelta(days=n), series=False) for n in range(3)]
    extras += [visit(24, T0 + timedelta(days=4), status="missed"),
               visit(25, T0 + timedelta(days=5), override=True, override_reason="relapse")]
    travel = (evv("check_in", T0, 30, distance_m=400), evv("check_out", T0 + 3 * H, 30),
              evv("check_in", T0 + 2 * H, 31, NORTH_1KM),
              evv("check_out", T0 + 5 * H, 31, NORTH_1KM, distance_m=900))
    # Nurse-2's last four doses, for two patients, each at 25 of its planned 35 mg.
    under = [dose(40 + n, T0 + timedelta(days=8 + n), quantity_ug=25_000, nurse_id="nurse-2",
                  patient_id=f"patient-{4 + n % 2}") for n in range(4)]
    visits += [visit(40 + n, d.given_at, patient_id=d.patient_id, nurse_id="nurse-2")
               for n, d in enumerate(under)]
    given = dict(
        sessions=(session(),), doses=(*rising, low, stray, *under), visits=(*visits, *extras),
        wastes=(waste(1, witness_ids=(), quantity_ug=16_000),
                waste(7, T0 + timedelta(days=21), quantity_ug=20_000, patient_id="patient-2")),
        witness_pairs=(WitnessPair("nurse-1", "nurse-7", 24, 30, 39),),
        attestations=(WitnessAttestation("waste-7", "nurse-1", "nurse-7", "device-7",
                                         T0 + timedelta(days=21),
                                         T0 + timedelta(days=21, hours=3)),),
        activity=team(),
        evv=travel, shifts=(shift(remaining_ug=5_000),),
        holdings=(holding(due_back_at=AS_OF - H),), counts=(count(counted_ug=1),),
        losses=(loss(notice_due_at=AS_OF - H),),
        ledger_breaks=(LedgerBreak("entry-3", 3, "hash_mismatch", "stored hash differs"),),
        quarantined=(QuarantinedEvent("q-1", "dose", "dose-9", "nurse-1", "device-1",
                                      "visit-1", "signature does not verify", AS_OF),),
        clocks=(clock(max_lead_seconds=900),),
        refusals=tuple(refusal(n) for n in range(3)))
    given.update(vault())
    given.update(prescribers())
    given.update(hours_and_plausibility())
    for name, extra in more.items():
        given[name] = (*given[name], *extra)
    return given


def prescribers() -> dict:
    """Return three prescribers at the protocol dose and one at twice it, justified."""
    return {"plans": tuple(
        PlanFact(id=f"version-{who}-{n}", plan_id=f"plan-{who}-{n}", version=1,
                 patient_id=f"patient-{who}-{n}", prescriber_id=f"prescriber-{who}",
                 created_at=T0, dose_ug_per_kg=dose, justified=True)
        for who, dose in (("a", 500), ("b", 500), ("c", 450), ("x", 1_000)) for n in range(5))}


@pytest.fixture(scope="module")
def findings():
    """Return what every rule finds in `everything()`."""
    return found(ALL, facts(**everything()))


def test_all_holds_every_rule_once_in_family_order():
    assert [rule.meta.id for rule in ALL] == RULE_IDS


def test_the_monitoring_rules_keep_their_metadata():
    assert [rule.meta for rule in ALL][:len(list(MONITORING))] == [r.meta for r in MONITORING]


@pytest.mark.parametrize("rule", list(ALL), ids=lambda rule: rule.meta.id)
def test_every_rule_says_why_and_on_what_authority(rule):
    assert rule.meta.rationale.strip()
    assert "CLINICAL.md" in rule.meta.source or "DESIGN.md" in rule.meta.source
    assert rule.check.__doc__


def test_every_rule_finds_something_in_everything(findings):
    assert {f.rule_id for f in findings} == set(RULE_IDS)


@pytest.mark.parametrize("rule_id", sorted(set(RULE_IDS) - WITHOUT_PEOPLE))
def test_evidence_names_the_nurse_or_patient(findings, rule_id):
    for finding in (f for f in findings if f.rule_id == rule_id):
        assert {"nurse_id", "patient_id", "pharmacist_id"} & set(finding.evidence), (
            finding.summary)


def test_every_summary_ends_on_what_a_reviewer_should_check(findings):
    # Issue 17: what was seen, against what, and the reviewer's next step, as a sentence.
    for finding in findings:
        sentences = finding.summary.split(". ")
        assert any(sentence.startswith("Check ") for sentence in sentences), finding.summary
        assert finding.summary.endswith("."), finding.summary


def test_sessions_carry_their_visit_s_nurse_and_patient(findings):
    session_findings = [f for f in findings if f.rule_id in {r.meta.id for r in MONITORING}]
    assert session_findings
    for finding in session_findings:
        assert (finding.evidence["nurse_id"], finding.evidence["patient_id"]) == (
            "nurse-1", "patient-1")


def test_sessions_keep_the_keys_the_monitoring_rules_gave_them(findings):
    alone = {f.rule_id: f.dedup_key for f in found(MONITORING, session())}
    assert alone == {f.rule_id: f.dedup_key for f in findings if f.rule_id in alone}


def test_sessions_are_judged_under_their_plan():
    plans = {"plan-1": {"monitoring_window_minutes": 60}}
    early = [f for f in found(ALL, facts(**everything(), plan_overrides=plans))
             if f.rule_id == "monitoring.early_discharge"]
    assert early == []


def test_a_second_run_over_more_facts_keeps_every_key(findings):
    later = found(ALL, facts(**everything(
        doses=(dose(40, T0 + timedelta(days=60), patient_id="patient-9", visit_id=None),),
        activity=(replace(team()[0], nurse_id="peer-new"),),
        shifts=(shift(nurse_id="nurse-2", remaining_ug=1),))))
    assert {f.dedup_key for f in findings} <= {f.dedup_key for f in later}
    assert len(later) > len(findings)


def test_no_two_findings_share_a_key(findings):
    # A case gathers several occurrences under one key; each occurrence is found once.
    assert len({(f.dedup_key, f.occurrence_key) for f in findings}) == len(findings)


@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_a_shadow_rule_still_finds_but_marks_it(findings, rule_id):
    shadowed = run(ALL.with_modes({rule_id: Mode.SHADOW}), facts(**everything()), Policy())
    mine = [f for f in shadowed if f.rule_id == rule_id]
    assert mine and all(f.shadow for f in mine)
    assert not any(f.shadow for f in shadowed if f.rule_id != rule_id)
    assert {f.dedup_key for f in mine} == {f.dedup_key for f in findings
                                           if f.rule_id == rule_id}


@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_a_disabled_rule_finds_nothing(findings, rule_id):
    disabled = run(ALL.with_modes({rule_id: Mode.DISABLED}), facts(**everything()), Policy())
    assert rule_id not in {f.rule_id for f in disabled}
    assert len(disabled) == len(findings) - sum(f.rule_id == rule_id for f in findings)


def test_severities_are_the_rules_own_when_no_reason_lowers_them(findings):
    metas = {rule.meta.id: rule.meta.severity for rule in ALL}
    assert [f.rule_id for f in findings if f.severity != metas[f.rule_id]] == []


def test_an_empty_organisation_raises_nothing():
    assert found(ALL, facts()) == []

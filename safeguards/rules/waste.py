"""Waste rules: every waste witnessed, by a witness not chosen too often, in time, and possible."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from fractions import Fraction

from safeguards.facts import Facts
from safeguards.findings import Finding, Severity, Subject, SubjectKind
from safeguards.policy import Policy
from safeguards.registry import Cadence, Mode, Registry, RuleMeta
from safeguards.rules.evidence import evidence, hours, minutes
from safeguards.rules.indexes import doses_by_visit, wasted_by_visit
from safeguards.stats import binomial_upper_tail, rounded, significant

WASTE = Registry()

UNWITNESSED = RuleMeta(
    id="waste.unwitnessed", version=1, title="Waste with no witness", severity=Severity.HIGH,
    rationale="Nobody but the nurse saw the drug go down the drain; unwitnessed waste is the "
              "commonest cover for diversion.",
    source="CLINICAL.md Diversion: unwitnessed waste (BD/CareFusion patents); DEA: waste of a "
           "partly used dose with a witness (practice)",
    mode=Mode.ENABLED)


@WASTE.rule(UNWITNESSED)
def unwitnessed(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag each waste with no witness other than the nurse herself."""
    for waste in facts.wastes:
        if set(waste.witness_ids) - {waste.nurse_id}:
            continue
        yield UNWITNESSED.finding(
            Subject(SubjectKind.NURSE, waste.nurse_id),
            f"{waste.quantity_ug} µg was wasted at {waste.occurred_at.isoformat()} with no "
            "witness; every waste needs one. Check with the nurse who saw the drug go, and her "
            "other wastes.",
            evidence(nurse_id=waste.nurse_id, patient_id=waste.patient_id, waste_id=waste.id,
                     visit_id=waste.visit_id, quantity_ug=waste.quantity_ug, lot=waste.lot,
                     occurred_at=waste.occurred_at),
            key=(waste.id,))


WITNESS_PAIR = RuleMeta(
    id="waste.witness_pair", version=2, title="One witness on far more wastes than chance",
    severity=Severity.HIGH,
    rationale="A witness who signs for a friend makes witnessed waste worthless; it shows as "
              "one name on a nurse's wastes far more often than her colleagues would be, over "
              "the whole window or, once the friendship has just begun, over its last days.",
    source="CLINICAL.md Diversion: waste score (BD/CareFusion patents); DEA: waste with a "
           "witness (practice); binomial test against a uniform choice of witness, over the "
           "window and its recent period, Bonferroni-corrected for the two looks",
    mode=Mode.ENABLED, cadence=Cadence.POPULATION)


def _witness_look(together: int, wastes: int, available: int, least: int, share: Fraction,
                  max_p: Fraction) -> tuple[Fraction, Fraction] | None:
    """Return (share, p-value) of one look at a pair when it is beyond chance, else None."""
    if wastes < least or available < 1:
        return None
    seen = Fraction(together, wastes)
    # The share is checked first: it is cheap, and it alone spares a large team's pairs.
    if seen < share:
        return None
    p_value = binomial_upper_tail(together, wastes, Fraction(1, available))
    return (seen, p_value) if p_value <= max_p else None


@WASTE.rule(WITNESS_PAIR)
def witness_pair(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a witness on more of a nurse's wastes than a random choice of witness explains,
    over the whole window or over its recent period."""
    share = Fraction(policy.value("witness_pair_min_share"))
    limit = policy.value("witness_pair_max_p_value")
    # Two looks at each pair (the window, its last days): Bonferroni halves the p-value limit
    # of each, so an honest pair is flagged by either no more often than the policy allows.
    max_p = Fraction(limit) / 2
    days = policy.value("witness_pair_recent_days")
    for pair in facts.witness_pairs:
        whole = _witness_look(pair.together, pair.nurse_wastes, pair.available_witnesses,
                              policy.value("witness_pair_min_wastes"), share, max_p)
        recent = _witness_look(pair.recent_together, pair.recent_wastes,
                               pair.available_witnesses,
                               policy.value("witness_pair_recent_min_wastes"), share, max_p)
        if whole is not None:
            together, wastes, (seen, p_value) = pair.together, pair.nurse_wastes, whole
            period = "the window"
        elif recent is not None:
            together, wastes, (seen, p_value) = pair.recent_together, pair.recent_wastes, recent
            period = f"the last {days} days"
        else:
            continue
        yield WITNESS_PAIR.finding(
            Subject(SubjectKind.NURSE, pair.nurse_id),
            f"Witness {pair.witness_id} signed {together} of the nurse's {wastes} wastes "
            f"over {period} ({rounded(seen * 100, 0)}%); with {pair.available_witnesses} "
            f"witnesses to choose from, chance gives that with probability "
            f"{significant(p_value)} (at most {significant(max_p)} allowed for each of the two "
            "looks). Check the wastes they signed together, and whether the witness was "
            "really there.",
            evidence(nurse_id=pair.nurse_id, witness_id=pair.witness_id,
                     together=pair.together, nurse_wastes=pair.nurse_wastes,
                     recent_together=pair.recent_together, recent_wastes=pair.recent_wastes,
                     recent_days=days, period="window" if whole is not None else "recent",
                     available_witnesses=pair.available_witnesses, share=rounded(seen, 3),
                     p_value=significant(p_value), max_p_value=limit,
                     max_p_value_each_look=significant(max_p)),
            key=(pair.witness_id,))


WITNESS_LATE = RuleMeta(
    id="waste.witness_late", version=1, title="Witness confirmed a waste long after it",
    severity=Severity.MEDIUM,
    rationale="A witness sees the drug go, in person or on a live call, and confirms as it "
              "goes; a witness whose phone confirmed long after the waste could not have "
              "watched it. A friendly witness signs what she is sent, when she gets to it.",
    source="DEA: waste of a partly used dose with a witness (practice); ASHP Guidelines on "
           "Preventing Diversion of Controlled Substances (2017): waste witnessed as it "
           "happens; CLINICAL.md Diversion: waste score (BD/CareFusion patents)",
    mode=Mode.ENABLED, cadence=Cadence.POPULATION)


@WASTE.rule(WITNESS_LATE)
def witness_late(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a waste whose witness's phone confirmed it longer after the waste than allowed."""
    limit = timedelta(minutes=policy.value("witness_late_minutes"))
    leads = {clock.device_id: clock.max_lead_seconds for clock in facts.clocks}
    for attested in facts.attestations:
        # A phone clock known to run ahead of the server's makes its confirmations look later.
        lead = timedelta(seconds=leads.get(attested.device_id, 0))
        after = attested.attested_at - attested.occurred_at - lead
        if after <= limit:
            continue
        ahead = (f", after allowing {minutes(lead)} min for her phone's clock running ahead"
                 if lead else "")
        yield WITNESS_LATE.finding(
            Subject(SubjectKind.NURSE, attested.nurse_id),
            f"Witness {attested.witness_id}'s phone confirmed the nurse's waste of "
            f"{attested.occurred_at.isoformat()} {hours(after)} h after it was recorded"
            f"{ahead}; a witness who watches a waste confirms it as it happens, within "
            f"{minutes(limit)} min. Check with the witness how she saw it, and when she "
            "confirmed the other wastes she signed for this nurse.",
            evidence(nurse_id=attested.nurse_id, witness_id=attested.witness_id,
                     witness_device_id=attested.device_id, waste_id=attested.waste_id,
                     patient_id=attested.patient_id, visit_id=attested.visit_id,
                     occurred_at=attested.occurred_at, attested_at=attested.attested_at,
                     clock_lead_minutes=minutes(lead), late_minutes=minutes(after),
                     max_late_minutes=policy.value("witness_late_minutes")),
            # One case per nurse and witness; each waste confirmed late is an occurrence.
            key=(attested.witness_id,), occurrence=attested.waste_id)


EXCEEDS_REMAINDER = RuleMeta(
    id="waste.exceeds_remainder", version=1,
    title="More wasted than the container held after the dose", severity=Severity.HIGH,
    rationale="A container holds what it holds: waste beyond container minus dose means the "
              "dose, the waste or the container is misrecorded.",
    source="DESIGN.md Safeguards: waste larger than vial-minus-dose; CLINICAL.md Diversion: "
           "bigger vial chosen when a smaller one fits (BD/CareFusion patents)",
    mode=Mode.ENABLED)


@WASTE.rule(EXCEEDS_REMAINDER)
def exceeds_remainder(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a visit whose wastes exceed its containers less its doses."""
    wasted = wasted_by_visit(facts)
    for visit_id, doses in doses_by_visit(facts).items():
        measured = [dose for dose in doses if dose.container_ug is not None]
        if visit_id not in wasted or not measured:
            continue
        container = sum(dose.container_ug for dose in measured)
        given = sum(dose.quantity_ug for dose in measured)
        excess = wasted[visit_id] - (container - given)
        if excess <= 0:
            continue
        first = measured[0]
        yield EXCEEDS_REMAINDER.finding(
            Subject(SubjectKind.VISIT, visit_id),
            f"{wasted[visit_id]} µg was wasted at the visit, but the container held "
            f"{container} µg and {given} µg was given: {excess} µg more than was left. Check "
            "the container size, the dose and the waste recorded against the stock dispensed "
            "for the visit.",
            evidence(nurse_id=first.nurse_id, patient_id=first.patient_id, visit_id=visit_id,
                     wasted_ug=wasted[visit_id], container_ug=container, dose_ug=given,
                     remainder_ug=container - given, excess_ug=excess),
            key=(visit_id,))


LATE = RuleMeta(
    id="waste.late", version=1, title="Waste recorded long after the dose",
    severity=Severity.MEDIUM,
    rationale="The remainder of a dose is wasted at the bedside; hours later, it has been "
              "somewhere nobody saw.",
    source="CLINICAL.md Diversion: long delay between dispense and waste (BD/CareFusion "
           "patents); the hours are practice",
    mode=Mode.ENABLED)


@WASTE.rule(LATE)
def late(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a waste recorded more than the policy's hours after its visit's dose ended."""
    doses = doses_by_visit(facts)
    limit = policy.value("waste_late_hours")
    for waste in facts.wastes:
        ends = [dose.infusion_ended_at or dose.given_at for dose in doses.get(waste.visit_id, ())]
        if not ends:
            continue
        delay = waste.occurred_at - max(ends)
        if delay <= timedelta(hours=limit):
            continue
        yield LATE.finding(
            Subject(SubjectKind.NURSE, waste.nurse_id),
            f"{waste.quantity_ug} µg was wasted {hours(delay)} h after the dose ended; at most "
            f"{limit} h is expected. Check where the remainder was in between, and who "
            "witnessed the waste.",
            evidence(nurse_id=waste.nurse_id, patient_id=waste.patient_id, waste_id=waste.id,
                     visit_id=waste.visit_id, quantity_ug=waste.quantity_ug,
                     dose_ended_at=max(ends), occurred_at=waste.occurred_at,
                     hours_after_dose=hours(delay), limit_hours=limit),
            key=(waste.id,))

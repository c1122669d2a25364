"""Visit and dose events a reviewer should see one by one: missed visits, overrides, off-plan
doses, and doses the nurse's bag did not hold."""

from __future__ import annotations

from collections.abc import Iterator

from safeguards.facts import Facts
from safeguards.findings import Finding, Severity, Subject, SubjectKind
from safeguards.policy import Policy
from safeguards.registry import Mode, Registry, RuleMeta
from safeguards.rules.evidence import evidence

VISITS = Registry()

MISSED_VISIT = RuleMeta(
    id="visit.missed", version=1, title="A scheduled visit was missed",
    severity=Severity.MEDIUM,
    rationale="A dose was due and no nurse checked in: the patient went without treatment, "
              "or a dose was given off the record.",
    source="DESIGN.md Jobs: missed-visit detection", mode=Mode.ENABLED)


@VISITS.rule(MISSED_VISIT)
def missed_visit(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag each visit marked missed."""
    for visit in facts.visits:
        if visit.status != "missed":
            continue
        yield MISSED_VISIT.finding(
            Subject(SubjectKind.VISIT, visit.id),
            f"Visit scheduled for {visit.scheduled_start.isoformat()} was missed; a dose was "
            "due. Check with the nurse and the patient why it did not take place, and whether "
            "a dose was given off the record.",
            evidence(visit_id=visit.id, patient_id=visit.patient_id, nurse_id=visit.nurse_id,
                     scheduled_start=visit.scheduled_start, reason=visit.status_reason))


FREQUENCY_OVERRIDE = RuleMeta(
    id="scheduling.frequency_override", version=1,
    title="A prescriber scheduled past a frequency limit", severity=Severity.MEDIUM,
    rationale="An override may be good medicine, but each one adds exposure to a drug with "
              "abuse liability; a reviewer confirms the reason.",
    source="CLINICAL.md Frequency: phase limits, Krystal et al. 2019; Spravato label",
    mode=Mode.ENABLED)


@VISITS.rule(FREQUENCY_OVERRIDE)
def frequency_override(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag each live visit a prescriber booked past a frequency limit."""
    for visit in facts.visits:
        if not visit.override or visit.status in ("cancelled", "rescheduled"):
            continue
        yield FREQUENCY_OVERRIDE.finding(
            Subject(SubjectKind.VISIT, visit.id),
            f"A prescriber scheduled the visit of {visit.scheduled_start.isoformat()} past a "
            f"frequency limit of the patient's plan (reason given: "
            f"{visit.override_reason or 'none'}). Check the reason against the patient's "
            "record and the prescriber's other overrides.",
            evidence(visit_id=visit.id, patient_id=visit.patient_id, nurse_id=visit.nurse_id,
                     prescriber_id=visit.override_by_id, reason=visit.override_reason,
                     scheduled_start=visit.scheduled_start))


OFF_PLAN_PRODUCT = RuleMeta(
    id="dosing.off_plan_product", version=1,
    title="A dose of another product or by another route than the plan's",
    severity=Severity.HIGH,
    rationale="The plan names the product and route the prescriber chose; another one changes "
              "the dose the patient really received.",
    source="DESIGN.md Safeguards: dosing against the plan; CLINICAL.md Drugs: doses differ by "
           "product and route",
    mode=Mode.ENABLED)


@VISITS.rule(OFF_PLAN_PRODUCT)
def off_plan_product(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag each dose whose product or route differs from its plan version's."""
    for dose in facts.doses:
        product_differs = dose.plan_product_id is not None and dose.product_id is not None \
            and dose.product_id != dose.plan_product_id
        route_differs = dose.plan_route is not None and dose.route is not None \
            and dose.route != dose.plan_route
        if not product_differs and not route_differs:
            continue
        what = " and ".join(name for name, differs in (("product", product_differs),
                                                        ("route", route_differs)) if differs)
        yield OFF_PLAN_PRODUCT.finding(
            Subject(SubjectKind.VISIT, dose.visit_id or dose.id),
            f"The dose's {what} differs from the plan version in force "
            f"(route {dose.route}, plan route {dose.plan_route}). Check the prescriber's order "
            "and the stock the nurse took for this visit.",
            evidence(dose_id=dose.id, visit_id=dose.visit_id, patient_id=dose.patient_id,
                     nurse_id=dose.nurse_id, product_id=dose.product_id,
                     plan_product_id=dose.plan_product_id, route=dose.route,
                     plan_route=dose.plan_route))


ADMINISTER_DISCREPANCY = RuleMeta(
    id="custody.administer_discrepancy", version=1,
    title="A dose recorded that the nurse's bag did not hold", severity=Severity.HIGH,
    rationale="A dose is kept because it was given, but the ledger could not move it out of "
              "the bag: stock came from somewhere the ledger does not know.",
    source="DESIGN.md Data: a phone's offline movement that would go negative is accepted and "
           "flagged as a discrepancy",
    mode=Mode.ENABLED)


@VISITS.rule(ADMINISTER_DISCREPANCY)
def administer_discrepancy(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag each dose with no custody entry moving it out of the nurse's bag."""
    for dose in facts.doses:
        if dose.custody_entry_id is not None:
            continue
        yield ADMINISTER_DISCREPANCY.finding(
            Subject(SubjectKind.VISIT, dose.visit_id or dose.id),
            f"A dose of {dose.quantity_ug} µg from lot {dose.lot} was recorded, but the ledger "
            "shows the nurse's bag did not hold it: the administration is kept, custody was "
            "not moved. Check where the stock came from: the bag's dispenses, its last count "
            "and the phone's unsynced records.",
            evidence(dose_id=dose.id, visit_id=dose.visit_id, patient_id=dose.patient_id,
                     nurse_id=dose.nurse_id, lot=dose.lot, quantity_ug=dose.quantity_ug))

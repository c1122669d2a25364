"""Custody rules: bags back to zero, stock returned, counts matching, losses filed, ledger sound."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import timedelta

from safeguards.facts import BagShift, CustodyRefusal, Facts
from safeguards.findings import EvidenceValue, Finding, Severity, Subject, SubjectKind
from safeguards.policy import Policy
from safeguards.registry import Cadence, Mode, Registry, RuleMeta
from safeguards.rules.evidence import evidence, hours

CUSTODY = Registry()

# The ids, subjects and keys below are the ones the backend raised before these rules existed,
# so switching it over updates its open flags instead of opening new ones.
BAG_UNBALANCED = RuleMeta(
    id="custody.bag_unbalanced", version=1, title="A nurse's bag did not come back to zero",
    severity=Severity.HIGH,
    rationale="What was dispensed to a nurse must be administered, wasted or returned by the "
              "end of her shift; a remainder is stock outside the vault with no record of "
              "where it went.",
    source="DESIGN.md Safeguards: bag not balanced at shift end; CLINICAL.md Diversion: "
           "dispense = administered + wasted + returned (Bluesight)",
    mode=Mode.ENABLED, cadence=Cadence.POPULATION)
# A bag statement's figures, in the order a reviewer reads them.
SHIFT_FIGURES = ("product_id", "opening_ug", "dispensed_ug", "transferred_in_ug",
                 "adjusted_up_ug", "administered_ug", "wasted_ug", "returned_ug",
                 "transferred_out_ug", "lost_ug", "adjusted_down_ug", "remaining_ug")


@CUSTODY.rule(BAG_UNBALANCED)
def bag_unbalanced(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag each nurse's shift whose bag still held stock at its deadline, all lots together."""
    shifts: dict[tuple[str, str], list[BagShift]] = defaultdict(list)
    for shift in facts.shifts:
        if shift.remaining_ug and shift.deadline <= facts.as_of:
            shifts[shift.nurse_id, shift.shift_day].append(shift)
    for (nurse_id, day), lines in shifts.items():
        remaining = sum(line.remaining_ug for line in lines)
        figures: dict[str, EvidenceValue] = {}
        for line in lines:
            figures |= {f"{line.lot}.{name}": getattr(line, name) for name in SHIFT_FIGURES}
        lots = ", ".join(line.lot for line in lines)
        yield BAG_UNBALANCED.finding(
            Subject(SubjectKind.NURSE, nurse_id),
            f"The nurse's bag still held {remaining} µg (lots {lots}) at the deadline of her "
            f"shift of {day}; it must come back to zero. Check the bag's dispenses, doses, "
            "wastes and returns that day, and where the remaining stock is.",
            evidence(nurse_id=nurse_id, day=day, deadline_at=max(line.deadline for line in lines),
                     remaining_ug=remaining, **figures),
            key=(day,))


UNRETURNED = RuleMeta(
    id="custody.unreturned_stock", version=2, title="Stock kept in a bag past its return time",
    severity=Severity.HIGH,
    rationale="Stock away from the vault belongs to the pharmacy's registration; past its "
              "return time nobody can say where it is. Each kit is judged by its own visits "
              "(over when completed, cancelled or missed), whatever else the nurse has open.",
    source="CLINICAL.md DEA: stock away from the registered site, 21 CFR 1304.21; "
           "DESIGN.md Safeguards: unreturned stock past deadline",
    mode=Mode.ENABLED, cadence=Cadence.POPULATION)


@CUSTODY.rule(UNRETURNED)
def unreturned_stock(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag stock still in a nurse's bag after it was due back in the vault."""
    for held in facts.holdings:
        if held.quantity_ug <= 0 or held.due_back_at >= facts.as_of:
            continue
        overdue = hours(facts.as_of - held.due_back_at)
        kit = f" of the kit sealed {held.seal_id}" if held.seal_id else ""
        yield UNRETURNED.finding(
            Subject(SubjectKind.NURSE, held.nurse_id),
            f"The nurse's bag still holds {held.quantity_ug} µg of lot {held.lot}{kit}, due "
            f"back in the vault {overdue} h ago, after the visits it went out for. Check where "
            "the stock is and why it was not returned.",
            evidence(nurse_id=held.nurse_id, lot=held.lot, product_id=held.product_id,
                     quantity_ug=held.quantity_ug, due_back_at=held.due_back_at,
                     hours_overdue=overdue, dispense_id=held.dispense_id,
                     seal_id=held.seal_id, visit_id=held.visit_id),
            # One flag per kit kept: each is stock of its own out of the vault.
            key=(held.dispense_id,) if held.dispense_id else
            (held.lot, held.due_back_at.isoformat()))


COUNT_DISCREPANCY = RuleMeta(
    id="custody.count_discrepancy", version=2, title="A count does not match the ledger",
    severity=Severity.HIGH,
    rationale="What is on the shelf or in the bag must be what the ledger says: a shortfall "
              "may be diversion, a surplus an unrecorded movement.",
    source="DESIGN.md Safeguards: count mismatch at reconciliation; CLINICAL.md DEA: "
           "inventory, 21 CFR 1304.11",
    mode=Mode.ENABLED)


@CUSTODY.rule(COUNT_DISCREPANCY)
def count_discrepancy(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag each count of a lot that differs from the ledger's balance."""
    for count in facts.counts:
        difference = count.counted_ug - count.expected_ug
        if not difference:
            continue
        yield COUNT_DISCREPANCY.finding(
            Subject(SubjectKind.LOT, count.lot),
            f"Counted {count.counted_ug} µg of lot {count.lot} in {count.holder}; the ledger "
            f"says {count.expected_ug} µg ({difference:+} µg)"
            + (f"; adjusted (reason given: {count.reason})." if count.adjustment_id
               else "; not adjusted, no reason given.")
            + " Check the count with whoever counted, and the lot's movements since its last "
            "count that matched.",
            evidence(nurse_id=count.nurse_id, holder=count.holder, product_id=count.product_id,
                     lot=count.lot, ledger_ug=count.expected_ug, counted_ug=count.counted_ug,
                     difference_ug=difference, count_id=count.id,
                     counted_by_id=count.counted_by_id, counted_at=count.counted_at,
                     adjustment_id=count.adjustment_id, reason=count.reason),
            # The same shortfall again in the same holder's lot is one case that grows.
            key=(count.holder, count.product_id), occurrence=count.id)


LOSS_REPORTED = RuleMeta(
    id="custody.loss_reported", version=1, title="A theft or loss was recorded",
    severity=Severity.HIGH,
    rationale="Every theft or significant loss needs an investigation and two DEA filings.",
    source="CLINICAL.md DEA: theft or significant loss, 21 CFR 1301.76(b)",
    mode=Mode.ENABLED)


@CUSTODY.rule(LOSS_REPORTED)
def loss_reported(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag every recorded theft or loss, with its DEA deadlines."""
    for loss in facts.losses:
        yield LOSS_REPORTED.finding(
            Subject(SubjectKind.LOT, loss.lot),
            f"{loss.quantity_ug} µg of lot {loss.lot} was lost from {loss.holder}, discovered "
            f"{loss.discovered_at.isoformat()}; DEA notice due by "
            f"{loss.notice_due_at.isoformat()}, Form 106 by {loss.form_106_due_at.isoformat()}. "
            "Check that the loss is being investigated and that both filings are made on time.",
            evidence(nurse_id=loss.nurse_id, loss_report_id=loss.id, entry_id=loss.entry_id,
                     holder=loss.holder, lot=loss.lot, quantity_ug=loss.quantity_ug,
                     discovered_at=loss.discovered_at, notice_due_at=loss.notice_due_at,
                     notice_filed_at=loss.notice_filed_at,
                     form_106_due_at=loss.form_106_due_at,
                     form_106_filed_at=loss.form_106_filed_at),
            key=(loss.id,))


LOSS_DEADLINE_MISSED = RuleMeta(
    id="custody.loss_deadline_missed", version=1,
    title="A DEA theft-or-loss deadline passed without a filing", severity=Severity.CRITICAL,
    rationale="A registrant must give DEA written notice within 1 business day of discovering "
              "a theft or significant loss, and file DEA Form 106 within 45 days.",
    source="CLINICAL.md DEA: theft or significant loss, 21 CFR 1301.76(b)", mode=Mode.ENABLED,
    cadence=Cadence.POPULATION)


# The filings in a reviewer's words.
FILINGS = {"dea_notice": "DEA written notice", "form_106": "DEA Form 106"}


@CUSTODY.rule(LOSS_DEADLINE_MISSED)
def loss_deadline_missed(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag each DEA filing whose deadline passed with nothing filed."""
    for loss in facts.losses:
        filings = (("dea_notice", loss.notice_due_at, loss.notice_filed_at),
                   ("form_106", loss.form_106_due_at, loss.form_106_filed_at))
        for filing, due_at, filed_at in filings:
            if filed_at is not None or due_at >= facts.as_of:
                continue
            yield LOSS_DEADLINE_MISSED.finding(
                Subject(SubjectKind.LOT, loss.lot),
                f"The {FILINGS[filing]} for the loss of {loss.quantity_ug} µg of lot "
                f"{loss.lot} was due by {due_at.isoformat()} and has not been filed; DEA wants "
                "written notice within 1 business day and Form 106 within 45 days. Check with "
                "the pharmacist in charge that it is filed now, and record the filing.",
                evidence(nurse_id=loss.nurse_id, loss_report_id=loss.id, entry_id=loss.entry_id,
                         filing=filing, due_at=due_at, discovered_at=loss.discovered_at,
                         holder=loss.holder, lot=loss.lot, quantity_ug=loss.quantity_ug),
                key=(loss.id, filing))


LEDGER_BREAK = RuleMeta(
    id="custody.ledger_break", version=1,
    title="The custody ledger's chain, a checkpoint or a signature fails",
    severity=Severity.CRITICAL,
    rationale="A ledger that does not verify may have been altered: every balance after the "
              "break is in doubt.",
    source="DESIGN.md Data that must never be wrong: hash-chained ledger, signed checkpoints "
           "and device signatures; CLINICAL.md DEA: dispenser records, 21 CFR 1304.22(c)",
    mode=Mode.ENABLED, cadence=Cadence.POPULATION)


@CUSTODY.rule(LEDGER_BREAK)
def ledger_break(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag every place where the ledger fails verification."""
    for broken in facts.ledger_breaks:
        where = (f"entry {broken.entry_id}" if broken.entry_id is not None
                 else "the ledger's checkpoints")
        at = f" (sequence {broken.seq})" if broken.seq is not None else ""
        yield LEDGER_BREAK.finding(
            Subject(SubjectKind.ORGANISATION, facts.organisation_id),
            f"The custody ledger fails verification at {where}{at}: {broken.problem}; every "
            "balance after it is in doubt. Check the entry against the database backups and "
            "the audit log for who changed it.",
            evidence(entry_id=broken.entry_id, seq=broken.seq, problem=broken.problem,
                     detail=broken.detail),
            key=(broken.problem, broken.entry_id or "", "" if broken.seq is None else broken.seq))


QUARANTINED = RuleMeta(
    id="sync.quarantined_event", version=2, title="A record from a phone was quarantined",
    severity=Severity.HIGH,
    rationale="A record that fails its signature or conflicts with what was stored is kept "
              "aside, never dropped: someone must decide what really happened.",
    source="DESIGN.md Data that must never be wrong: a failed signature is quarantined and "
           "flagged; Sync: a conflicting create is quarantined",
    mode=Mode.ENABLED)


@CUSTODY.rule(QUARANTINED)
def quarantined_event(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag every record kept in quarantine."""
    for held in facts.quarantined:
        subject = (Subject(SubjectKind.DEVICE, held.device_id) if held.device_id
                   else Subject(SubjectKind.NURSE, held.user_id))
        yield QUARANTINED.finding(
            subject,
            f"A {held.record_type} record from a phone was quarantined: {held.reason}. Check the "
            "record and the phone with the nurse, and decide what really happened.",
            # The user who pushed it is the phone's nurse; the queue filters on nurse_id.
            evidence(quarantine_id=held.id, record_type=held.record_type,
                     record_id=held.record_id or "", reason=held.reason,
                     nurse_id=held.user_id, device_id=held.device_id,
                     visit_id=held.visit_id, received_at=held.received_at),
            # One phone's records failing the same way are one case, each record an occurrence.
            key=(held.record_type, held.reason), occurrence=held.id)


REFUSALS = RuleMeta(
    id="custody.refusals_repeated", version=1,
    title="A nurse's custody writes refused again and again", severity=Severity.MEDIUM,
    rationale="A return refused for a wrong seal, a movement refused for too little stock or "
              "a waste with no witness is stopped at the door, but stopped attempts repeated "
              "by one nurse are themselves a signal: someone trying seals, or stock that is "
              "not where the ledger says.",
    source="CLINICAL.md Diversion: waste score (unwitnessed waste, BD/CareFusion patents US "
           "10915604) and atypical activity per person (Epstein, Anesth Analg 2007); DEA: "
           "dispenser records, 21 CFR 1304.22(c); the count and window are practice",
    mode=Mode.ENABLED)


@CUSTODY.rule(REFUSALS)
def refusals_repeated(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a nurse with at least the policy's refused custody writes inside its window."""
    least, days = policy.value("refusals_min_count"), policy.value("refusals_window_days")
    since = facts.as_of - timedelta(days=days)
    by_nurse: dict[str, list[CustodyRefusal]] = defaultdict(list)
    for refusal in sorted(facts.refusals, key=lambda refusal: (refusal.at, refusal.id)):
        if since < refusal.at <= facts.as_of:
            by_nurse[refusal.nurse_id].append(refusal)
    for nurse_id, refused in by_nurse.items():
        if len(refused) >= least:
            yield _refusals_finding(nurse_id, refused, least, days)


def _refusals_finding(nurse_id: str, refused: list[CustodyRefusal], least: int,
                      days: int) -> Finding:
    codes = Counter(refusal.code for refusal in refused)
    said = ", ".join(f"{code} {count}" for code, count in sorted(codes.items()))
    # Twice the pattern is no slip: it rises a step (and the case rises with its occurrences).
    severity = Severity.HIGH if len(refused) >= 2 * least else None
    last = refused[-1]
    return REFUSALS.finding(
        Subject(SubjectKind.NURSE, nurse_id),
        f"The nurse had {len(refused)} custody writes refused in the last {days} days ({said}); "
        f"{least} in {days} days make a pattern. Check what she tried to return or record "
        "against her bag's kits and the ledger, and whether the stock is where it should be.",
        evidence(nurse_id=nurse_id, refusals=len(refused), min_count=least, window_days=days,
                 codes=said, first_at=refused[0].at, last_at=last.at,
                 last_code=last.code, last_kind=last.kind, lots=",".join(sorted(
                     {refusal.lot for refusal in refused if refusal.lot})),
                 refusal_ids=",".join(refusal.id for refusal in refused)),
        # One case per nurse; each refusal that keeps the pattern going is an occurrence.
        occurrence=last.id, severity=severity)

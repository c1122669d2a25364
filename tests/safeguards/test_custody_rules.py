"""Bags, returns, counts, losses and their DEA deadlines, ledger breaks and quarantined records."""

from __future__ import annotations

from datetime import timedelta

import pytest

from safeguards import (
    LedgerBreak,
    QuarantinedEvent,
    Severity,
    Subject,
    SubjectKind,
    dedup_key,
)
from safeguards.rules.custody import CUSTODY
from tests.safeguards.factories import (
    AS_OF,
    count,
    facts,
    found,
    holding,
    ids,
    loss,
    refusal,
    shift,
)

SECOND = timedelta(seconds=1)

BAG_CASES = [
    ("balanced", shift(), False),
    ("1 µg left at the deadline", shift(remaining_ug=1, deadline=AS_OF), True),
    ("1 µg left a second before the deadline", shift(remaining_ug=1, deadline=AS_OF + SECOND),
     False),
    ("1 µg short", shift(remaining_ug=-1), True),
]


@pytest.mark.parametrize(("bag", "expected"), [c[1:] for c in BAG_CASES],
                         ids=[c[0] for c in BAG_CASES])
def test_bag_unbalanced_cases(bag, expected):
    assert ("custody.bag_unbalanced" in ids(found(CUSTODY, facts(shifts=(bag,))))) is expected


def test_bag_unbalanced_is_one_finding_per_nurse_and_day_as_the_backend_raised_it():
    lots = (shift(remaining_ug=5_000), shift(lot="LOT-2", remaining_ug=1_000),
            shift(lot="LOT-3"))
    [finding] = found(CUSTODY, facts(shifts=lots))
    assert finding.severity is Severity.HIGH
    assert finding.evidence["remaining_ug"] == 6_000
    assert finding.evidence["LOT-2.remaining_ug"] == 1_000
    assert finding.evidence["nurse_id"] == "nurse-1"
    assert "LOT-3.remaining_ug" not in finding.evidence
    assert finding.dedup_key == dedup_key(
        "custody.bag_unbalanced", Subject(SubjectKind.NURSE, "nurse-1"), ("2026-11-30",))


UNRETURNED_CASES = [
    ("due back now", holding(), False),
    ("a second overdue", holding(due_back_at=AS_OF - SECOND), True),
    ("nothing held", holding(due_back_at=AS_OF - timedelta(days=1), quantity_ug=0), False),
]


@pytest.mark.parametrize(("held", "expected"), [c[1:] for c in UNRETURNED_CASES],
                         ids=[c[0] for c in UNRETURNED_CASES])
def test_unreturned_stock_cases(held, expected):
    findings = found(CUSTODY, facts(holdings=(held,)))
    assert ("custody.unreturned_stock" in ids(findings)) is expected


def test_unreturned_stock_keeps_its_key_while_it_stays_out():
    held = holding(due_back_at=AS_OF - timedelta(hours=3))
    [now] = found(CUSTODY, facts(holdings=(held,)))
    [later] = found(CUSTODY, facts(holdings=(held,), as_of=AS_OF + timedelta(days=2)))
    assert now.dedup_key == later.dedup_key
    assert str(now.evidence["hours_overdue"]) == "3.0"
    assert now.evidence["nurse_id"] == "nurse-1"


KIT_CASES = [
    # (a kit judged by its own visits: the loader gives each kit its due time)
    ("a kit due back a second ago", holding(dispense_id="d-1", seal_id="S-1",
                                            due_back_at=AS_OF - SECOND), ["d-1"]),
    ("a kit due back now", holding(dispense_id="d-1", due_back_at=AS_OF), []),
    ("two kits of one lot, one overdue", (holding(dispense_id="d-1", due_back_at=AS_OF - SECOND),
                                          holding(dispense_id="d-2", due_back_at=AS_OF)),
     ["d-1"]),
    ("two kits of one lot, both overdue", (holding(dispense_id="d-1", due_back_at=AS_OF - SECOND),
                                           holding(dispense_id="d-2",
                                                   due_back_at=AS_OF - SECOND)),
     ["d-1", "d-2"]),
]


@pytest.mark.parametrize(("held", "flagged"), [c[1:] for c in KIT_CASES],
                         ids=[c[0] for c in KIT_CASES])
def test_unreturned_stock_is_one_flag_per_kit(held, flagged):
    held = held if isinstance(held, tuple) else (held,)
    findings = found(CUSTODY, facts(holdings=held))
    assert [f.evidence["dispense_id"] for f in findings] == flagged
    assert len({f.dedup_key for f in findings}) == len(flagged)
    for finding in findings:
        assert "Check where the stock is" in finding.summary


REFUSAL_CASES = [
    # (refusals of nurse-1 in the 7 days before AS_OF; 3 make a pattern, 6 rise to high)
    ("none", (), None),
    ("two, just below", tuple(refusal(n) for n in range(2)), None),
    ("three, at the count", tuple(refusal(n) for n in range(3)), Severity.MEDIUM),
    ("five", tuple(refusal(n) for n in range(5)), Severity.MEDIUM),
    ("six, twice the count", tuple(refusal(n) for n in range(6)), Severity.HIGH),
    ("three, one just outside the window",
     (*(refusal(n) for n in range(2)), refusal(9, at=AS_OF - timedelta(days=7))), None),
    ("three, all just inside the window",
     tuple(refusal(n, at=AS_OF - timedelta(days=7) + SECOND) for n in range(3)),
     Severity.MEDIUM),
    ("three, one after as_of", (*(refusal(n) for n in range(2)), refusal(9, at=AS_OF + SECOND)),
     None),
    ("three of different kinds",
     (refusal(1), refusal(2, code="insufficient_stock", kind="transfer"),
      refusal(3, code="witness_required", kind="waste")), Severity.MEDIUM),
    ("three by three nurses", tuple(refusal(n, nurse_id=f"nurse-{n}") for n in range(3)), None),
]


@pytest.mark.parametrize(("refused", "severity"), [c[1:] for c in REFUSAL_CASES],
                         ids=[c[0] for c in REFUSAL_CASES])
def test_refusals_repeated_cases(refused, severity):
    findings = [f for f in found(CUSTODY, facts(refusals=refused))
                if f.rule_id == "custody.refusals_repeated"]
    assert [f.severity for f in findings] == ([severity] if severity else [])


def test_refusals_repeated_is_one_case_per_nurse_each_refusal_an_occurrence():
    three = tuple(refusal(n) for n in range(3))
    [first] = found(CUSTODY, facts(refusals=three))
    [then] = found(CUSTODY, facts(refusals=(*three, refusal(7))))
    assert first.dedup_key == then.dedup_key == dedup_key(
        "custody.refusals_repeated", Subject(SubjectKind.NURSE, "nurse-1"))
    assert (first.occurrence, then.occurrence) == ("refusal-2", "refusal-7")
    assert then.evidence["refusals"] == 4
    assert then.evidence["codes"] == "seal_mismatch 4"
    assert "4 custody writes refused in the last 7 days" in then.summary
    assert "Check what she tried to return" in then.summary


def test_refusals_repeated_follows_the_policy():
    refused = tuple(refusal(n) for n in range(2))
    assert [f.rule_id for f in found(CUSTODY, facts(refusals=refused),
                                     {"refusals_min_count": 2})] == [
        "custody.refusals_repeated"]


COUNT_CASES = [
    ("matches", count(), None),
    ("1 µg short", count(counted_ug=49_999), -1),
    ("1 µg over", count(counted_ug=50_001), 1),
]


@pytest.mark.parametrize(("counted", "difference"), [c[1:] for c in COUNT_CASES],
                         ids=[c[0] for c in COUNT_CASES])
def test_count_discrepancy_cases(counted, difference):
    findings = found(CUSTODY, facts(counts=(counted,)))
    assert [f.evidence["difference_ug"] for f in findings] == (
        [difference] if difference else [])


def test_count_discrepancy_is_a_case_of_the_holder_s_lot_each_count_an_occurrence():
    [finding] = found(CUSTODY, facts(counts=(count(counted_ug=40_000),)))
    assert finding.subject == Subject(SubjectKind.LOT, "LOT-1")
    assert finding.dedup_key == dedup_key("custody.count_discrepancy", finding.subject,
                                          ("bag:nurse-1", "product-1"))
    assert finding.occurrence == "count-1"
    assert finding.evidence["nurse_id"] == "nurse-1"
    assert "-10000 µg" in finding.summary


def test_every_loss_is_reported_at_high_severity():
    findings = found(CUSTODY, facts(losses=(loss(), loss(id="loss-2", entry_id="entry-10"))))
    assert ids(findings) == ["custody.loss_reported"] * 2
    assert {f.severity for f in findings} == {Severity.HIGH}
    assert {f.evidence["nurse_id"] for f in findings} == {"nurse-1"}


DEADLINE_CASES = [
    ("notice due now", loss(notice_due_at=AS_OF), []),
    ("notice a second overdue", loss(notice_due_at=AS_OF - SECOND), ["dea_notice"]),
    ("notice filed late", loss(notice_due_at=AS_OF - SECOND, notice_filed_at=AS_OF), []),
    ("both overdue", loss(notice_due_at=AS_OF - SECOND, form_106_due_at=AS_OF - SECOND),
     ["dea_notice", "form_106"]),
]


@pytest.mark.parametrize(("lost", "filings"), [c[1:] for c in DEADLINE_CASES],
                         ids=[c[0] for c in DEADLINE_CASES])
def test_loss_deadline_missed_cases(lost, filings):
    findings = [f for f in found(CUSTODY, facts(losses=(lost,)))
                if f.rule_id == "custody.loss_deadline_missed"]
    assert [f.evidence["filing"] for f in findings] == filings
    assert {f.severity for f in findings} <= {Severity.CRITICAL}
    assert len({f.dedup_key for f in findings}) == len(filings)


def test_loss_deadline_missed_keeps_the_backend_s_key():
    [finding] = [f for f in found(CUSTODY, facts(losses=(loss(notice_due_at=AS_OF - SECOND),)))
                 if f.rule_id == "custody.loss_deadline_missed"]
    assert finding.dedup_key == dedup_key("custody.loss_deadline_missed",
                                          Subject(SubjectKind.LOT, "LOT-1"),
                                          ("loss-1", "dea_notice"))


def test_every_ledger_break_is_critical_and_keyed_by_where_it_is():
    breaks = (LedgerBreak("entry-3", 3, "hash_mismatch", "stored hash differs"),
              LedgerBreak(None, None, "checkpoint_signature", "checkpoint 2 fails"))
    findings = found(CUSTODY, facts(ledger_breaks=breaks))
    assert ids(findings) == ["custody.ledger_break"] * 2
    assert {f.severity for f in findings} == {Severity.CRITICAL}
    assert findings[0].subject == Subject(SubjectKind.ORGANISATION, "org-1")
    assert findings[0].evidence["seq"] == 3
    assert "seq" not in findings[1].evidence
    assert findings[0].dedup_key == found(CUSTODY, facts(ledger_breaks=breaks[:1]))[0].dedup_key


@pytest.mark.parametrize(("device_id", "subject"), [
    ("device-1", Subject(SubjectKind.DEVICE, "device-1")),
    (None, Subject(SubjectKind.NURSE, "nurse-1")),
])
def test_every_quarantined_record_is_flagged_about_its_phone(device_id, subject):
    held = QuarantinedEvent("q-1", "dose", "dose-1", "nurse-1", device_id, "visit-1",
                            "signature does not verify", AS_OF)
    [finding] = found(CUSTODY, facts(quarantined=(held,)))
    assert finding.subject == subject
    assert finding.summary == "A dose record from a phone was quarantined: signature does " \
                              "not verify. Check the record and the phone with the nurse, and " \
                              "decide what really happened."
    assert finding.evidence["nurse_id"] == "nurse-1"
    assert finding.dedup_key == dedup_key("sync.quarantined_event", subject,
                                          ("dose", "signature does not verify"))
    assert finding.occurrence == "q-1"

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
from tests.safeguards.factories import AS_OF, count, facts, found, holding, ids, loss, shift

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


def test_count_discrepancy_keeps_the_backend_s_subject_and_key():
    [finding] = found(CUSTODY, facts(counts=(count(counted_ug=40_000),)))
    assert finding.subject == Subject(SubjectKind.LOT, "LOT-1")
    assert finding.dedup_key == dedup_key("custody.count_discrepancy", finding.subject,
                                          ("count-1", "bag:nurse-1", "product-1"))
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
                              "not verify"
    assert finding.evidence["nurse_id"] == "nurse-1"
    assert finding.dedup_key == dedup_key("sync.quarantined_event", subject, ("q-1",))

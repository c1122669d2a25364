"""Pharmacy rules, table-driven at and around each threshold: adjustments, shortfalls written
off, duties held by one person, receipts against order and invoice, disposals against peers."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from safeguards.facts import Count, VaultMovement
from safeguards.rules.pharmacy import PHARMACY
from tests.safeguards.factories import AS_OF, facts, found

SINCE = AS_OF - timedelta(days=90)
COUNTED_AT = AS_OF - timedelta(days=5)
DAY = timedelta(days=1)


def moved(id_: str, kind: str, quantity: int, actor: str = "pharmacist-1",
          from_holder: str = "vault", to_holder: str = "vault", **fields) -> VaultMovement:
    """Return a movement of lot LOT-1 by `actor`, a pharmacist, at COUNTED_AT."""
    defaults = dict(lot="LOT-1", product_id="product-1", occurred_at=COUNTED_AT,
                    actor_role="pharmacist")
    return VaultMovement(id_, kind, actor, from_holder, to_holder, quantity_ug=quantity,
                         **{**defaults, **fields})


def receipt(quantity: int = 1_000_000, id_: str = "receive-1", **fields) -> VaultMovement:
    """Return a receipt from the supplier into the vault."""
    return moved(id_, "receive", quantity, from_holder="supplier", **fields)


def adjust(quantity: int, direction: str = "down", id_: str = "adjust-1",
           holder: str = "vault", **fields) -> VaultMovement:
    """Return an adjustment of `holder`: down writes stock off to `count`, up adds it."""
    ends = (holder, "count") if direction == "down" else ("count", holder)
    return moved(id_, "adjust", quantity, from_holder=ends[0], to_holder=ends[1], **fields)


def lost(quantity: int, at=COUNTED_AT, holder: str = "vault", **fields) -> VaultMovement:
    """Return a loss entry from `holder`."""
    return moved(f"loss-{at:%d%H%M}", "loss", quantity, from_holder=holder, to_holder="loss",
                 occurred_at=at, **fields)


def counted(short: int = 10_000, **fields) -> Count:
    """Return pharmacist-1's count of the vault's LOT-1, `short` µg under the ledger."""
    defaults = dict(id="count-1", holder="vault", lot="LOT-1", product_id="product-1",
                    counted_at=COUNTED_AT, counted_by_id="pharmacist-1", expected_ug=50_000,
                    counted_ug=50_000 - short, adjustment_id="adjust-1", reason="miscount")
    return Count(**{**defaults, **fields})


def vault(*movements: VaultMovement, counts: tuple[Count, ...] = (), since=SINCE, **fields):
    """Return the organisation's facts over the scan window (since None: a write's own)."""
    return facts(vault_movements=movements, counts=counts, vault_since=since, **fields)


def findings_of(rule_id: str, given, overrides: dict | None = None):
    return [f for f in found(PHARMACY, given, overrides) if f.rule_id == rule_id]


def outcome(rule_id: str, given, overrides: dict | None = None) -> list[tuple[str, str]]:
    """Return (subject id, severity) of each finding of `rule_id`."""
    return [(f.subject.id, f.severity.value) for f in findings_of(rule_id, given, overrides)]


# adjustment_total: 1% of 1,000,000 µg received is 10,000 µg.
@pytest.mark.parametrize(("movements", "overrides", "expected"), [
    pytest.param((receipt(), adjust(9_999)), None, [], id="just-below-the-share"),
    pytest.param((receipt(), adjust(10_000)), None, [("pharmacist-1", "medium")],
                 id="at-the-share"),
    pytest.param((receipt(), adjust(10_001)), None, [("pharmacist-1", "medium")],
                 id="just-above"),
    pytest.param((receipt(), adjust(19_999)), None, [("pharmacist-1", "medium")],
                 id="just-below-twice"),
    pytest.param((receipt(), adjust(20_000)), None, [("pharmacist-1", "high")],
                 id="twice-the-share-is-high"),
    pytest.param((receipt(), adjust(8_000), adjust(8_000, id_="adjust-2")), None,
                 [("pharmacist-1", "medium")], id="a-running-total-of-small-ones"),
    pytest.param((receipt(), adjust(15_000), adjust(6_000, "up", id_="adjust-2")), None, [],
                 id="net-of-what-was-found"),
    pytest.param((receipt(), adjust(50_000, "up")), None, [], id="only-found-more"),
    pytest.param((receipt(), adjust(6_000), adjust(6_000, id_="adjust-2", actor="p-2")), None,
                 [], id="two-people-each-below"),
    pytest.param((receipt(), adjust(50_000, holder="bag:nurse-1", count_id="count-1")), None,
                 [], id="a-bag-s-shortfall-at-a-count-is-the-nurse-s"),
    pytest.param((receipt(), adjust(10_000, holder="bag:nurse-1")), None,
                 [("pharmacist-1", "medium")], id="a-bag-written-down-outside-a-count"),
    pytest.param((receipt(), adjust(15_000)),
                 {"pharmacy_adjustment_max_share": Decimal("0.02")}, [],
                 id="policy-raises-the-share"),
    pytest.param((adjust(1),), None, [("pharmacist-1", "high")], id="nothing-received"),
    pytest.param((receipt(),), None, [], id="honest-no-adjustment"),
])
def test_adjustment_total(movements, overrides, expected):
    assert outcome("pharmacy.adjustment_total", vault(*movements), overrides) == expected


def test_adjustment_total_waits_for_the_whole_window():
    given = vault(receipt(), adjust(900_000), since=None)
    assert findings_of("pharmacy.adjustment_total", given) == []


def test_adjustment_total_says_what_against_what_and_what_to_check():
    [finding] = findings_of("pharmacy.adjustment_total", vault(receipt(), adjust(12_000)))
    assert finding.evidence["net_written_off_ug"] == 12_000
    assert finding.evidence["received_ug"] == 1_000_000
    assert str(finding.evidence["share"]) == "0.0120"
    assert "1.20% of the 1000000 µg the vault received" in finding.summary
    assert "Check" in finding.summary
    assert finding.evidence["pharmacist_id"] == "pharmacist-1"
    assert finding.evidence["holders"] == "vault"


# adjustment_after_shortfall: a loss may be reported up to 3 days either side of the count.
SHORT = (counted(),)
FIX = adjust(10_000, count_id="count-1")


@pytest.mark.parametrize(("movements", "counts", "expected"), [
    pytest.param((FIX,), SHORT, [("pharmacist-1", "high")], id="own-count-written-off"),
    pytest.param((replace(FIX, actor_id="pharmacist-2"),), SHORT, [("pharmacist-2", "medium")],
                 id="written-off-by-another"),
    pytest.param((FIX, lost(10_000, COUNTED_AT + DAY)), SHORT, [], id="loss-reported"),
    pytest.param((FIX, lost(4_000, COUNTED_AT + DAY)), SHORT, [("pharmacist-1", "high")],
                 id="part-reported"),
    pytest.param((FIX, lost(10_000, COUNTED_AT + 3 * DAY)), SHORT, [],
                 id="reported-on-the-last-day"),
    pytest.param((FIX, lost(10_000, COUNTED_AT + 3 * DAY + timedelta(seconds=1))), SHORT,
                 [("pharmacist-1", "high")], id="reported-too-late"),
    pytest.param((FIX, lost(10_000, COUNTED_AT + DAY, lot="LOT-2")), SHORT,
                 [("pharmacist-1", "high")], id="a-loss-of-another-lot"),
    pytest.param((), SHORT, [], id="not-adjusted-is-count-discrepancy-s"),
    pytest.param((replace(FIX, id="adjust-9", count_id=None, occurred_at=COUNTED_AT + DAY),),
                 (counted(adjustment_id=None),), [("pharmacist-1", "high")],
                 id="adjusted-later-within-the-days"),
    pytest.param((replace(FIX, id="adjust-9", count_id=None,
                          occurred_at=COUNTED_AT + 4 * DAY),),
                 (counted(adjustment_id=None),), [], id="adjusted-long-after"),
    pytest.param((adjust(10_000, "up", count_id="count-1"),), SHORT, [], id="adjusted-up"),
    pytest.param((FIX,), (counted(short=0),), [], id="honest-count-matched"),
    pytest.param((FIX,), (counted(short=-5_000),), [], id="found-more"),
])
def test_adjustment_after_shortfall(movements, counts, expected):
    given = vault(*movements, counts=counts)
    assert outcome("pharmacy.adjustment_after_shortfall", given) == expected


@pytest.mark.parametrize(("days_ago", "fires"), [(2, False), (3, True), (4, True)])
def test_a_shortfall_gets_its_days_to_be_reported(days_ago, fires):
    at = AS_OF - timedelta(days=days_ago)
    given = vault(replace(FIX, occurred_at=at), counts=(counted(counted_at=at),))
    assert bool(findings_of("pharmacy.adjustment_after_shortfall", given)) is fires


def test_one_person_s_written_off_shortfalls_of_a_holder_are_one_case():
    second = counted(id="count-2", lot="LOT-2", adjustment_id="adjust-2")
    given = vault(FIX, adjust(10_000, id_="adjust-2", lot="LOT-2", count_id="count-2"),
                  counts=(counted(), second))
    found_ = findings_of("pharmacy.adjustment_after_shortfall", given)
    assert len(found_) == 2 and len({f.dedup_key for f in found_}) == 1
    assert {f.occurrence_key for f in found_} == {"count-1/product-1/LOT-1",
                                                  "count-2/product-1/LOT-2"}


def test_a_bag_shortfall_names_the_bag_s_nurse():
    bag = "bag:nurse-1"
    given = vault(adjust(10_000, holder=bag, count_id="count-1"),
                  counts=(counted(holder=bag, nurse_id="nurse-1"),))
    [finding] = findings_of("pharmacy.adjustment_after_shortfall", given)
    assert finding.evidence["nurse_id"] == "nurse-1"
    assert finding.evidence["unreported_ug"] == 10_000
    assert "Check the count sheet" in finding.summary


def test_adjustment_after_shortfall_waits_for_the_whole_window():
    assert findings_of("pharmacy.adjustment_after_shortfall",
                       vault(FIX, counts=SHORT, since=None)) == []


# separation_of_duties: two of receiving, counting short and writing off one vault lot.
@pytest.mark.parametrize(("movements", "counts", "expected"), [
    pytest.param((receipt(),), SHORT, [("pharmacist-1", "high")],
                 id="received-counted-short-and-wrote-off"),
    pytest.param((receipt(),), (counted(adjustment_id=None),), [("pharmacist-1", "medium")],
                 id="received-and-counted-short"),
    pytest.param((receipt(), adjust(5_000)), (), [("pharmacist-1", "medium")],
                 id="received-and-wrote-off"),
    pytest.param((receipt(actor="pharmacist-2"),), SHORT, [("pharmacist-1", "medium")],
                 id="counted-short-and-wrote-off"),
    pytest.param((receipt(),), (counted(counted_by_id="pharmacist-2"),),
                 [("pharmacist-2", "medium")], id="another-counted-and-wrote-off"),
    pytest.param((receipt(),), (counted(short=0, adjustment_id=None),), [],
                 id="honest-receiver-counts-and-it-matches"),
    pytest.param((receipt(), adjust(5_000, "up")), (), [], id="found-more"),
    pytest.param((receipt(),), (counted(lot="LOT-2", adjustment_id=None),), [],
                 id="another-lot"),
    pytest.param((receipt(), adjust(5_000, holder="bag:nurse-1")),
                 (counted(holder="bag:nurse-1"),), [], id="a-bag-is-counted-by-the-pharmacy"),
    pytest.param((receipt(), receipt(id_="receive-2")), (), [], id="only-receiving"),
])
def test_separation_of_duties(movements, counts, expected):
    # Judged as the entry is written: the write's own facts are enough.
    given = vault(*movements, counts=counts, since=None)
    assert outcome("pharmacy.separation_of_duties", given) == expected


def test_separation_of_duties_lists_the_duties_and_their_records():
    [finding] = findings_of("pharmacy.separation_of_duties", vault(receipt(), counts=SHORT))
    assert finding.evidence["duties"] == "received, counted_short, adjusted_down"
    assert (finding.evidence["receipt_ids"], finding.evidence["count_ids"],
            finding.evidence["adjustment_ids"]) == ("receive-1", "count-1", "adjust-1")
    assert "Check" in finding.summary


def test_a_write_noted_twice_is_one_finding():
    given = vault(receipt(), adjust(5_000), receipt(), since=None)
    assert len(findings_of("pharmacy.separation_of_duties", given)) == 1


# receipt_mismatch: tolerance 0 µg by default.
@pytest.mark.parametrize(("fields", "overrides", "expected"), [
    pytest.param({}, None, [], id="no-order-or-invoice-recorded"),
    pytest.param({"invoiced_ug": 1_000_000, "ordered_ug": 1_000_000}, None, [],
                 id="honest-all-agree"),
    pytest.param({"invoiced_ug": 1_000_001}, None, [("pharmacist-1", "high")], id="1-ug-short"),
    pytest.param({"invoiced_ug": 1_000_001}, {"pharmacy_receipt_tolerance_ug": 1}, [],
                 id="at-the-tolerance"),
    pytest.param({"invoiced_ug": 1_000_002}, {"pharmacy_receipt_tolerance_ug": 1},
                 [("pharmacist-1", "high")], id="above-the-tolerance"),
    pytest.param({"invoiced_ug": 900_000}, None, [("pharmacist-1", "high")],
                 id="booked-more-than-invoiced"),
    pytest.param({"ordered_ug": 1_200_000, "invoiced_ug": 1_000_000}, None, [],
                 id="honest-back-order-invoiced-as-shipped"),
    pytest.param({"ordered_ug": 1_200_000, "invoiced_ug": 1_200_000}, None,
                 [("pharmacist-1", "high")], id="short-of-order-and-invoice"),
    pytest.param({"ordered_ug": 1_200_000}, None, [("pharmacist-1", "medium")],
                 id="short-of-the-order-no-invoice"),
    # Issue 17 report: a receipt short of its order but matching its invoice is a back-order.
    pytest.param({"ordered_ug": 1_000_001, "invoiced_ug": 1_000_000}, None, [],
                 id="one-ug-back-order-invoiced-as-shipped"),
    pytest.param({"ordered_ug": 1_200_000, "invoiced_ug": 1_100_000}, None,
                 [("pharmacist-1", "high")], id="back-order-and-short-of-the-invoice"),
    pytest.param({"ordered_ug": 1_000_000, "invoiced_ug": 1_000_000},
                 {"pharmacy_receipt_tolerance_ug": 1}, [], id="all-agree-with-a-tolerance"),
])
def test_receipt_mismatch(fields, overrides, expected):
    given = vault(receipt(**fields), since=None)
    assert outcome("pharmacy.receipt_mismatch", given, overrides) == expected


def test_one_receiver_s_mismatched_receipts_are_one_case():
    given = vault(receipt(invoiced_ug=1_100_000),
                  receipt(invoiced_ug=1_100_000, id_="receive-2", lot="LOT-2"), since=None)
    found_ = findings_of("pharmacy.receipt_mismatch", given)
    assert len({f.dedup_key for f in found_}) == 1
    assert {f.occurrence_key for f in found_} == {"receive-1", "receive-2"}


def test_receipt_mismatch_reads_receipts_only():
    given = vault(moved("dispense-1", "dispense", 5_000, to_holder="bag:nurse-1",
                        invoiced_ug=1), since=None)
    assert findings_of("pharmacy.receipt_mismatch", given) == []


def test_receipt_mismatch_says_by_how_much():
    [finding] = findings_of("pharmacy.receipt_mismatch",
                            vault(receipt(invoiced_ug=1_050_000), since=None))
    assert finding.evidence["difference_ug"] == -50_000
    assert finding.evidence["pharmacist_id"] == "pharmacist-1"
    assert "invoiced 1050000 µg (-50000 µg" in finding.summary
    assert "Check" in finding.summary


# disposal_outlier: destructions per day worked, against the other pharmacists; z 3.5 on a
# spread of at least 0.015 a day, and at least twice the peers' median.
def pharmacist(person: str, destructions: int, days: int = 50,
               role: str = "pharmacist") -> tuple[VaultMovement, ...]:
    """Return a pharmacist's dispense on each of `days` days, and `destructions` among them."""
    def on(n: int, kind: str, to_holder: str) -> VaultMovement:
        return moved(f"{person}-{kind}-{n}", kind, 10_000, actor=person, to_holder=to_holder,
                     actor_role=role, occurred_at=COUNTED_AT - (n % days) * DAY)
    return (*(on(n, "dispense", "bag:nurse-1") for n in range(days)),
            *(on(n, "destroy", "destruction") for n in range(destructions)))


PEERS = tuple(m for n in (2, 3, 4) for m in pharmacist(f"p-{n}", 1))
BUSY_PEERS = tuple(m for n in (2, 3, 4) for m in pharmacist(f"p-{n}", 5))
# With the floor at 0.025 a day and peers who destroy nothing, z is 3.5 at 7 in 80 days.
FLOOR = {"pharmacy_disposal_spread_floor": Decimal("0.025")}
IDLE_PEER = pharmacist("p-2", 0, 80)


@pytest.mark.parametrize(("movements", "overrides", "expected"), [
    pytest.param(pharmacist("p-1", 4) + PEERS, None, [("p-1", "medium")],
                 id="four-in-fifty-days-against-one"),
    pytest.param(pharmacist("p-1", 7, 80) + IDLE_PEER, FLOOR, [("p-1", "medium")],
                 id="at-z-3.5"),
    pytest.param(pharmacist("p-1", 7, 81) + IDLE_PEER, FLOOR, [], id="just-below-z"),
    pytest.param(pharmacist("p-1", 2, 10) + PEERS, None, [], id="too-few-destructions"),
    pytest.param(pharmacist("p-1", 3, 10) + PEERS, None, [("p-1", "medium")],
                 id="at-the-fewest-destructions"),
    pytest.param(pharmacist("p-1", 10), None, [], id="no-peers"),
    pytest.param(pharmacist("p-1", 8) + BUSY_PEERS, None, [],
                 id="z-high-but-under-twice-the-median"),
    pytest.param(pharmacist("p-1", 10) + BUSY_PEERS, None, [("p-1", "medium")],
                 id="twice-the-median-and-z"),
    pytest.param(pharmacist("p-1", 10, role="nurse") + PEERS, None, [],
                 id="a-nurse-is-no-pharmacist"),
    pytest.param(pharmacist("p-1", 2) + PEERS, None, [], id="honest-like-her-peers"),
])
def test_disposal_outlier(movements, overrides, expected):
    assert outcome("pharmacy.disposal_outlier", vault(*movements), overrides) == expected


def test_disposal_outlier_waits_for_the_whole_window():
    given = vault(*pharmacist("p-1", 30), *PEERS, since=None)
    assert findings_of("pharmacy.disposal_outlier", given) == []


def test_disposal_outlier_counts_days_in_the_organisation_s_zone():
    # 23:30 UTC is the next day's 00:30 in Paris: two days worked, not one.
    late = replace(pharmacist("p-1", 0, 1)[0], id="late",
                   occurred_at=COUNTED_AT.replace(hour=23, minute=30))
    given = vault(*pharmacist("p-1", 3, 1), late, *PEERS, timezone="Europe/Paris")
    [finding] = findings_of("pharmacy.disposal_outlier", given)
    assert finding.evidence["days_worked"] == 2


def test_disposal_outlier_says_against_whom():
    [finding] = findings_of("pharmacy.disposal_outlier", vault(*pharmacist("p-1", 5), *PEERS))
    assert finding.evidence["per_day"] == Decimal("0.1000")
    assert finding.evidence["peers"] == 3
    assert "the median of the 3 other pharmacists is 0.020 a day" in finding.summary
    assert "Check" in finding.summary


def test_an_honest_vault_raises_nothing():
    honest = (receipt(ordered_ug=1_000_000, invoiced_ug=1_000_000),
              moved("dispense-1", "dispense", 200_000, to_holder="bag:nurse-1"),
              moved("return-1", "return", 50_000, from_holder="bag:nurse-1"),
              *PEERS, *pharmacist("pharmacist-1", 1))
    given = vault(*honest, counts=(counted(short=0, adjustment_id=None),))
    assert found(PHARMACY, given) == []

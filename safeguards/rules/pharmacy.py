"""Pharmacy rules: the vault's own movements, by the people who run it.

Diversion by a pharmacist leaves no dose behind: it shows in the ledger's corrections. Stock
written off by adjustment, a short count made good on paper with no loss reported, a receipt
booked for less than the supplier invoiced, more destroyed than colleagues destroy, and one
person holding the duties that guidance splits between two (receiving, counting, correcting).

A finding is about the pharmacist who did it: one case per rule (per holder for a written-off
shortfall), whose occurrences are the receipts, lots and counts seen. SubjectKind.NURSE is the
kind whose id a flag files as its person; the evidence names her `pharmacist_id`. Totals and
peer figures need the whole window: they judge nothing when the facts are only a write's own
(`Facts.vault_since` is None).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from fractions import Fraction
from zoneinfo import ZoneInfo

from safeguards.facts import Count, Facts, VaultMovement
from safeguards.findings import Finding, Severity, Subject, SubjectKind
from safeguards.policy import Policy
from safeguards.registry import Cadence, Mode, Registry, RuleMeta
from safeguards.rules.evidence import evidence
from safeguards.stats import median, robust_spread, rounded

PHARMACY = Registry()
VAULT = "vault"
PHARMACIST = "pharmacist"
HUNDRED = 100


def _movements(facts: Facts) -> list[VaultMovement]:
    # One unit of work may note a lot's receipts with each of its adjustments: once each here.
    return sorted({m.id: m for m in facts.vault_movements}.values(),
                  key=lambda m: (m.occurred_at, m.id))


def _person(person_id: str) -> Subject:
    return Subject(SubjectKind.NURSE, person_id)


def _ids(movements: Iterable[VaultMovement]) -> str:
    return ", ".join(m.id for m in movements)


def _percent(share: Fraction) -> str:
    return f"{rounded(share * HUNDRED, 2)}%"


ADJUSTMENT_TOTAL = RuleMeta(
    id="pharmacy.adjustment_total", version=1,
    title="One person's adjustments wrote off a large share of what the vault received",
    severity=Severity.MEDIUM,
    rationale="An adjustment corrects the ledger to the shelf; a person whose corrections "
              "keep taking stock off the books (the vault's, or a bag's outside any count) is "
              "writing off what she may have taken.",
    source="CLINICAL.md DEA: theft or significant loss, 21 CFR 1301.76(b) (quantity against "
           "the business, a pattern over time, losses tied to one person's access); ASHP "
           "Guidelines on Preventing Diversion of Controlled Substances (Am J Health-Syst Pharm "
           "2017;74:325): review inventory adjustments by person",
    mode=Mode.ENABLED, cadence=Cadence.POPULATION)


@PHARMACY.rule(ADJUSTMENT_TOTAL)
def adjustment_total(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a person whose net write-offs of stock exceed the policy share of receipts."""
    if facts.vault_since is None:
        return
    movements = _movements(facts)
    received = sum(m.quantity_ug for m in movements
                   if m.kind == "receive" and m.to_holder == VAULT)
    limit = Fraction(policy.value("pharmacy_adjustment_max_share"))
    by_person: dict[str, list[VaultMovement]] = defaultdict(list)
    for m in movements:
        # The vault is the pharmacy's own; a bag's shortfall at a count is the nurse's and
        # judged as such, but a bag written down outside any count hides her stock.
        if m.kind == "adjust" and (m.holder == VAULT or m.count_id is None):
            by_person[m.actor_id].append(m)
    for person, adjustments in sorted(by_person.items()):
        down = sum(m.quantity_ug for m in adjustments if m.adjusted_down)
        up = sum(m.quantity_ug for m in adjustments if not m.adjusted_down)
        net = down - up
        share = Fraction(net, received) if received else None
        if net <= 0 or (share is not None and share < limit):
            continue
        yield _adjustment_total(facts, person, adjustments, (down, up, received), share, limit)


def _adjustment_total(facts: Facts, person: str, adjustments: list[VaultMovement],
                      figures: tuple[int, int, int], share: Fraction | None,
                      limit: Fraction) -> Finding:
    down, up, received = figures
    downs = sum(m.adjusted_down for m in adjustments)
    against = (f"{_percent(share)} of the {received} µg the vault received in the window"
               if share is not None else "while the vault received nothing in the window")
    # Twice the policy share, or stock written off a vault that received none, is severe.
    severe = share is None or share >= 2 * limit
    return ADJUSTMENT_TOTAL.finding(
        _person(person),
        f"Adjustments recorded by this pharmacist since {facts.vault_since.date()} took "
        f"{down - up} µg net off the books ({downs} down, {down} µg; "
        f"{len(adjustments) - downs} up, {up} µg): {against}, against a policy limit of "
        f"{_percent(limit)}. Check each adjustment's reason against its count sheet, recount "
        "the lots with another pharmacist, and whether a loss should have been reported.",
        evidence(pharmacist_id=person, holders=", ".join(sorted({m.holder for m in adjustments})),
                 adjusted_down_ug=down, adjusted_up_ug=up,
                 net_written_off_ug=down - up, adjustments=len(adjustments),
                 adjustment_ids=_ids(adjustments), received_ug=received,
                 share=None if share is None else rounded(share, 4),
                 limit=rounded(limit, 4), since=facts.vault_since),
        severity=Severity.HIGH if severe else None)


@dataclass(frozen=True)
class Shortfall:
    """A count that found less than the ledger, the adjustments that wrote it off, the losses
    reported for it."""

    count: Count
    adjustments: tuple[VaultMovement, ...]
    reported_ug: int

    @property
    def short_ug(self) -> int:
        """Return how much less was counted than the ledger held."""
        return self.count.expected_ug - self.count.counted_ug

    @property
    def adjusted_ug(self) -> int:
        """Return how much the adjustments wrote off."""
        return sum(m.quantity_ug for m in self.adjustments)


def _same_lot(m: VaultMovement, count: Count) -> bool:
    return (m.holder, m.product_id, m.lot) == (count.holder, count.product_id, count.lot)


def _shortfalls(facts: Facts, grace: timedelta) -> Iterator[Shortfall]:
    """Yield each count shortfall written off by an adjustment down, with what was reported."""
    movements = _movements(facts)
    for count in sorted(facts.counts, key=lambda c: (c.counted_at, c.id, c.lot)):
        if count.counted_ug >= count.expected_ug or count.counted_at + grace > facts.as_of:
            continue
        # The count's own adjustment, one naming the count, or a later one of the lot.
        fixes = tuple(m for m in movements if m.adjusted_down and _same_lot(m, count) and (
            m.id == count.adjustment_id or m.count_id == count.id
            or count.counted_at <= m.occurred_at <= count.counted_at + grace))
        if not fixes:
            continue
        reported = sum(m.quantity_ug for m in movements
                       if m.kind == "loss" and _same_lot(m, count)
                       and abs(m.occurred_at - count.counted_at) <= grace)
        yield Shortfall(count, fixes, reported)


ADJUSTMENT_AFTER_SHORTFALL = RuleMeta(
    id="pharmacy.adjustment_after_shortfall", version=1,
    title="A count shortfall was written off by adjustment with no loss reported",
    severity=Severity.HIGH,
    rationale="A count that finds less than the ledger is a loss until explained; adjusting "
              "the ledger down to the shelf without reporting it makes the stock disappear "
              "on paper, most of all when the counter corrects her own count.",
    source="CLINICAL.md DEA: theft or significant loss, written notice within 1 business day "
           "and Form 106, 21 CFR 1301.76(b); inventory, 21 CFR 1304.11; ASHP Guidelines on "
           "Preventing Diversion of Controlled Substances (Am J Health-Syst Pharm 2017;74:325): "
           "resolve count discrepancies with a second person and report unresolved losses",
    mode=Mode.ENABLED, cadence=Cadence.POPULATION)


@PHARMACY.rule(ADJUSTMENT_AFTER_SHORTFALL)
def adjustment_after_shortfall(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a count shortfall adjusted away with less reported as lost than was short."""
    if facts.vault_since is None:
        return
    days = int(policy.value("pharmacy_shortfall_report_days"))
    for found in _shortfalls(facts, timedelta(days=days)):
        unreported = min(found.short_ug, found.adjusted_ug) - found.reported_ug
        if unreported <= 0:
            continue
        count, adjuster = found.count, found.adjustments[0].actor_id
        own = adjuster == count.counted_by_id
        who = ("the pharmacist who counted it" if own
               else f"another person ({adjuster}) than the one who counted it")
        yield ADJUSTMENT_AFTER_SHORTFALL.finding(
            _person(adjuster),
            f"A count of lot {count.lot} in {count.holder} on {count.counted_at.date()} found "
            f"{found.short_ug} µg less than the ledger; {who} wrote {found.adjusted_ug} µg off "
            f"by adjusting down (reason: {count.reason or 'none given'}), and "
            f"{found.reported_ug} µg was reported lost within {days} days. Check the count "
            f"sheet with a second person, who had access to {count.holder}, and whether a DEA "
            "theft-or-loss notice and Form 106 are owed.",
            evidence(pharmacist_id=adjuster, counted_by_id=count.counted_by_id,
                     nurse_id=count.nurse_id, count_id=count.id, holder=count.holder,
                     product_id=count.product_id, lot=count.lot, ledger_ug=count.expected_ug,
                     counted_ug=count.counted_ug, short_ug=found.short_ug,
                     adjusted_ug=found.adjusted_ug, reported_lost_ug=found.reported_ug,
                     unreported_ug=unreported, adjustment_ids=_ids(found.adjustments),
                     same_person=str(own).lower(), counted_at=count.counted_at,
                     reason=count.reason),
            # One case per person and holder; each count written off is one occurrence of it.
            key=(count.holder,), occurrence=f"{count.id}/{count.product_id}/{count.lot}",
            severity=None if own else Severity.MEDIUM)


# The duties guidance splits, as this rule names them, in the order a lot meets them.
RECEIVED, COUNTED_SHORT, ADJUSTED_DOWN = "received", "counted_short", "adjusted_down"

SEPARATION_OF_DUTIES = RuleMeta(
    id="pharmacy.separation_of_duties", version=1,
    title="One person received, counted short or wrote off the same vault lot",
    severity=Severity.MEDIUM,
    rationale="Whoever receives stock should not be the one who verifies it by count, nor "
              "the one who corrects a count's shortfall: one person holding two of these "
              "can take stock and make the records agree.",
    source="ASHP Guidelines on Preventing Diversion of Controlled Substances (Am J Health-Syst "
           "Pharm 2017;74:325): separation of duties between procurement/receipt, inventory "
           "counts and reconciliation of discrepancies; CLINICAL.md DEA: dispenser records of "
           "each receipt, 21 CFR 1304.22(c); inventory, 21 CFR 1304.11",
    mode=Mode.ENABLED)


def _vault_duties(facts: Facts) -> dict[tuple[str, str, str], dict[str, list[str]]]:
    """Return, per (person, product, lot) of the vault, the ids behind each duty she held."""
    duties: dict[tuple[str, str, str], dict[str, list[str]]] = defaultdict(
        lambda: defaultdict(list))
    for m in _movements(facts):
        if m.kind == "receive" and m.to_holder == VAULT:
            duties[m.actor_id, m.product_id, m.lot][RECEIVED].append(m.id)
        elif m.adjusted_down and m.holder == VAULT:
            duties[m.actor_id, m.product_id, m.lot][ADJUSTED_DOWN].append(m.id)
    for count in facts.counts:
        if count.holder != VAULT or count.counted_ug >= count.expected_ug:
            continue
        held = duties[count.counted_by_id, count.product_id, count.lot]
        held[COUNTED_SHORT].append(count.id)
        # A count's own adjustment is recorded under its counter.
        if count.adjustment_id and count.adjustment_id not in held[ADJUSTED_DOWN]:
            held[ADJUSTED_DOWN].append(count.adjustment_id)
    return duties


@PHARMACY.rule(SEPARATION_OF_DUTIES)
def separation_of_duties(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a person who held two of receiving, counting short and writing off one vault lot."""
    for (person, product_id, lot), held in sorted(_vault_duties(facts).items()):
        names = [duty for duty in (RECEIVED, COUNTED_SHORT, ADJUSTED_DOWN) if held.get(duty)]
        if len(names) < 2:
            continue
        words = {RECEIVED: "received it", COUNTED_SHORT: "counted it short",
                 ADJUSTED_DOWN: "wrote part of it off by adjusting down"}
        yield SEPARATION_OF_DUTIES.finding(
            _person(person),
            f"For lot {lot} in the vault, the same pharmacist "
            f"{', '.join(words[name] for name in names)}: duties ASHP guidance gives to "
            "different people (receiving, counting, correcting a count). Check the lot's "
            "receipt against its invoice, recount it with a second pharmacist, and have "
            "someone else review the adjustment.",
            evidence(pharmacist_id=person, product_id=product_id, lot=lot, holder=VAULT,
                     duties=", ".join(names), receipt_ids=", ".join(held.get(RECEIVED, ())),
                     count_ids=", ".join(held.get(COUNTED_SHORT, ())),
                     adjustment_ids=", ".join(held.get(ADJUSTED_DOWN, ()))),
            occurrence=f"{product_id}/{lot}",
            severity=Severity.HIGH if len(names) == 3 else None)


RECEIPT_MISMATCH = RuleMeta(
    id="pharmacy.receipt_mismatch", version=1,
    title="A receipt's quantity differs from its order or invoice",
    severity=Severity.HIGH,
    rationale="Stock booked into the vault for less than the supplier invoiced is stock "
              "that arrived and never reached the ledger; a receipt short of its order is a "
              "back-order when the invoice shows it, and unexplained when no invoice does.",
    source="CLINICAL.md DEA: dispenser records of each receipt's quantity, 21 CFR 1304.22(c); "
           "the purchaser records what it received against the order (21 CFR 1305.13(e)); "
           "ASHP Guidelines on Preventing Diversion of Controlled Substances (Am J Health-Syst "
           "Pharm 2017;74:325): reconcile receipts against orders and invoices",
    mode=Mode.ENABLED)


@PHARMACY.rule(RECEIPT_MISMATCH)
def receipt_mismatch(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a receipt whose quantity differs from its invoice's, or its order's without one."""
    tolerance = policy.value("pharmacy_receipt_tolerance_ug")
    for m in _movements(facts):
        if m.kind != "receive":
            continue
        off_invoice = m.invoiced_ug is not None and abs(m.invoiced_ug - m.quantity_ug) > tolerance
        # A short shipment invoiced as shipped is the supplier's back-order, not the vault's:
        # the order counts only when no invoice quantity was stated.
        off_order = (m.invoiced_ug is None and m.ordered_ug is not None
                     and abs(m.ordered_ug - m.quantity_ug) > tolerance)
        if not (off_invoice or off_order):
            continue
        against = "invoiced" if off_invoice else "ordered"
        expected = m.invoiced_ug if off_invoice else m.ordered_ug
        yield RECEIPT_MISMATCH.finding(
            _person(m.actor_id),
            f"Lot {m.lot} was received into the vault as {m.quantity_ug} µg; the supplier "
            f"{against} {expected} µg ({m.quantity_ug - expected:+} µg; tolerance "
            f"{tolerance} µg). Check the delivery's packing slip and invoice against the "
            "shelf, and who received it.",
            evidence(pharmacist_id=m.actor_id, entry_id=m.id, product_id=m.product_id,
                     lot=m.lot, received_ug=m.quantity_ug, ordered_ug=m.ordered_ug,
                     invoiced_ug=m.invoiced_ug, compared_with=against,
                     difference_ug=m.quantity_ug - expected, tolerance_ug=tolerance,
                     received_at=m.occurred_at),
            occurrence=m.id, severity=None if off_invoice else Severity.MEDIUM)


@dataclass(frozen=True)
class Disposer:
    """One pharmacist's destructions against the days she worked in the vault."""

    person: str
    destroyed_ug: int
    destructions: int
    days_worked: int

    @property
    def rate(self) -> Fraction:
        """Return her destructions per day worked."""
        return Fraction(self.destructions, self.days_worked)


def _disposers(facts: Facts) -> list[Disposer]:
    """Return each pharmacist's destructions and her days with any vault movement, local days."""
    zone = ZoneInfo(facts.timezone)
    days: dict[str, set[date]] = defaultdict(set)
    destroyed: dict[str, list[int]] = defaultdict(list)
    for m in _movements(facts):
        if m.actor_role not in (None, PHARMACIST):
            continue
        days[m.actor_id].add(m.occurred_at.astimezone(zone).date())
        if m.kind == "destroy":
            destroyed[m.actor_id].append(m.quantity_ug)
    return [Disposer(person, sum(destroyed[person]), len(destroyed[person]), len(worked))
            for person, worked in sorted(days.items())]


def _scale(values: list[Fraction], floor: Fraction) -> Fraction:
    """Return the peers' robust scale (stats.robust_spread), never below `floor`.

    The floor is in destructions per day, not a share of the median: with few pharmacists the
    median is often 0, and a share of 0 is no floor at all.
    """
    return max(robust_spread(values).scale or 0, floor)


DISPOSAL_OUTLIER = RuleMeta(
    id="pharmacy.disposal_outlier", version=1,
    title="A pharmacist destroys stock far more often than her peers",
    severity=Severity.MEDIUM,
    rationale="Destruction and return to a reverse distributor take stock off the books for "
              "good, and witnesses sign what they are shown; a pharmacist who destroys far "
              "more often, per day worked, than her colleagues is where a review starts.",
    source="CLINICAL.md DEA: destruction of stock, DEA Form 41 with two witnesses, 21 CFR "
           "1317; CLINICAL.md Diversion: count per worker per day worked (Epstein, Anesth "
           "Analg 2007), peer score within a role (Omnicell; Bluesight IRIS); modified z-score "
           "against the other pharmacists, Iglewicz & Hoaglin 1993, with a floor under the "
           "spread (Rousseeuw & Croux 1993) and a minimum sample and effect size",
    mode=Mode.ENABLED, cadence=Cadence.POPULATION)


@PHARMACY.rule(DISPOSAL_OUTLIER)
def disposal_outlier(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a pharmacist whose destructions per day worked are far above her peers'."""
    if facts.vault_since is None:
        return
    disposers = _disposers(facts)
    limit = policy.value("pharmacy_disposal_z")
    ratio = Fraction(policy.value("pharmacy_disposal_min_ratio"))
    floor = Fraction(policy.value("pharmacy_disposal_spread_floor"))
    for one in disposers:
        peers = [other.rate for other in disposers if other.person != one.person]
        if (one.destructions < policy.value("pharmacy_disposal_min_entries")
                or len(peers) < policy.value("pharmacy_peer_min_peers")):
            continue
        centre = median(peers)
        z = (one.rate - centre) / _scale(peers, floor)
        if z < limit or one.rate < ratio * centre:
            continue
        yield DISPOSAL_OUTLIER.finding(
            _person(one.person),
            f"This pharmacist recorded {one.destructions} destructions or returns for disposal "
            f"({one.destroyed_ug} µg) over {one.days_worked} days she worked in the vault since "
            f"{facts.vault_since.date()}, {rounded(one.rate, 3)} a day; the median of the "
            f"{len(peers)} other pharmacists is {rounded(centre, 3)} a day (modified z "
            f"{rounded(z, 1)}, limit {limit}). Check each destruction's Form 41, its "
            "witnesses and the stock's condition and expiry, and where returned stock went.",
            evidence(pharmacist_id=one.person, destroyed_ug=one.destroyed_ug,
                     destructions=one.destructions, days_worked=one.days_worked,
                     per_day=rounded(one.rate, 4), peer_median_per_day=rounded(centre, 4),
                     robust_z=rounded(z, 2), z_threshold=limit, peers=len(peers),
                     since=facts.vault_since))

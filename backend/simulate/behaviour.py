"""How nurses and patients behave: honestly, except where a misuse pattern is injected.

Each injected pattern acts only from its start day, records in the ground truth every id it
touches, and leaves the footprint a real case would leave (documented on each class):

- `skimming_nurse`: under-doses each patient (55-75% of the plan, recorded as given), records
  the whole rest of the vial as wasted before her witness, and pockets a third of it;
- `phantom_doses`: on about half her visits she records a full session but leaves 25-45 min
  after checking in, copies one set of vitals into every observation, and a third of those
  check-ins are made from the car 300-900 m away (with a reason);
- `escalating_patient`: one patient's dose creeps up 6% a session (to 0.9 mg/kg) and the
  prescriber books an extra visit every 9-12 days, overriding the frequency limits;
- `friendly_witness`: one colleague signs 90% of one nurse's wastes;
- `leaky_bag`: a nurse keeps the spare vial of her kit on 60% of days instead of returning it;
- `tampered_ledger`: someone with database access pockets a vault vial and lowers a past
  receipt (and the vault balance) to match, with a raw UPDATE (see `tamper_ledger`);
- `drifting_clock`: one nurse's phone clock gains 90 s a day, so everything it signs carries
  an `occurred_at` ever further ahead of the server's `received_at`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from backend.append_only import drop_append_only, make_append_only
from backend.custody.ledger import VAULT
from backend.custody.models import CustodyBalance, CustodyEntry, Kind
from backend.simulate.truth import Pattern
from backend.simulate.world import Nurse, Patient, Person, Vial, World

PATTERNS = {
    "skimming_nurse": "under-doses, wastes the whole remainder on record, pockets part of it",
    "phantom_doses": "records full sessions on short visits with copied vitals",
    "escalating_patient": "doses creep upward; extra visits booked over the frequency limits",
    "friendly_witness": "one colleague witnesses almost every waste of one nurse",
    "leaky_bag": "keeps her kit's spare vial instead of returning it",
    "tampered_ledger": "a vault vial taken and a past receipt lowered by a raw UPDATE",
    "drifting_clock": "a phone whose clock runs ever further ahead of the server",
}
# When each pattern starts, as a share of the simulated days.
STARTS = {"drifting_clock": 0.15, "skimming_nurse": 0.25, "friendly_witness": 0.25,
          "phantom_doses": 0.3, "escalating_patient": 0.3, "leaky_bag": 0.35,
          "tampered_ledger": 0.55}
SYNC_LATE_SHARE, NO_GO_SHARE, HOLD_SHARE, SPIKE_SHARE = 0.15, 0.02, 0.04, 0.02
NO_GO_REASONS = ("Patient reports chest tightness; prescriber informed, dose held.",
                 "Patient unwell with a fever; dose held and rebooked.",
                 "Patient took a benzodiazepine this morning; dose held.")
HOLD_JUSTIFICATION = "Re-checked after 10 min seated rest; asymptomatic; prescriber approved."
DRIFT_SECONDS_PER_DAY = 90


@dataclass(frozen=True)
class Timeline:
    """When things happen at one visit, in true time and minutes after the dose begins."""

    arrive: datetime
    setup: int
    infusion: int
    observations: tuple[int, ...]
    discharge: int
    leave: datetime
    go: bool = True
    hold: bool = False
    spike: bool = False
    sync_late: bool = False
    away_m: int = 0
    copied_vitals: bool = False


@dataclass(frozen=True)
class Recorded:
    """What one visit put on record, for the patterns to note in the ground truth."""

    visit_id: str
    at: datetime
    timeline: Timeline
    dosed: bool
    waste_entry_id: str | None = None
    witness_id: str | None = None


def honest_timeline(rng: random.Random, arrive: datetime) -> Timeline:
    """Return a visit as a careful nurse runs it, with the occasional hold or no-go."""
    draw = rng.random()
    if draw < NO_GO_SHARE:
        return Timeline(arrive, 8, 0, (), 0, arrive + timedelta(minutes=rng.randint(25, 40)),
                        go=False, hold=rng.random() < 0.5)
    hold = draw < NO_GO_SHARE + HOLD_SHARE
    spike = not hold and draw < NO_GO_SHARE + HOLD_SHARE + SPIKE_SHARE
    setup, count = rng.randint(20, 30), rng.choice((9, 10))
    # Every 15 min (±1) after the dose begins, and discharge a few minutes after the last.
    observations = tuple(15 * k + rng.randint(-1, 1) for k in range(1, count + 1))
    discharge = observations[-1] + rng.randint(2, 4)
    return Timeline(arrive, setup, 40 + rng.randint(-1, 2), observations, discharge,
                    arrive + timedelta(minutes=setup + discharge + rng.randint(5, 10)),
                    hold=hold, spike=spike, sync_late=rng.random() < SYNC_LATE_SHARE)


class Conduct:
    """A nurse who does everything by the book; injected patterns override single steps."""

    def __init__(self, nurse: Nurse, pattern: Pattern | None = None,
                 starts: datetime | None = None) -> None:
        self.nurse, self.pattern, self.starts = nurse, pattern, starts

    def active(self, at: datetime) -> bool:
        """Tell whether the injected behaviour has begun by `at`."""
        return self.starts is not None and at >= self.starts

    def device_time(self, at: datetime) -> datetime:
        """Return what the nurse's phone clock reads at true time `at`."""
        return at

    def timeline(self, rng: random.Random, arrive: datetime) -> Timeline:
        """Return how the visit unfolds."""
        return honest_timeline(rng, arrive)

    def dose_ug(self, rng: random.Random, planned_ug: int, at: datetime) -> int:
        """Return the dose drawn up and recorded, to the half milligram."""
        return max(500, round(planned_ug * rng.uniform(0.99, 1.01) / 500) * 500)

    def waste_ug(self, rng: random.Random, remainder_ug: int, at: datetime) -> int:
        """Return the waste recorded for a vial's remainder."""
        return remainder_ug

    def witness(self, rng: random.Random, candidates: list[Person], at: datetime) -> Person:
        """Return who witnesses a waste: any plausible colleague."""
        return rng.choice(candidates)

    def kept(self, rng: random.Random, unopened: list[Vial], at: datetime) -> list[Vial]:
        """Return the unopened vials the nurse does not hand back at the end of the day."""
        return []

    def recorded(self, session: Recorded) -> None:
        """Note a recorded session in the ground truth, when a pattern is acting."""


class SkimmingNurse(Conduct):
    """Under-doses, records the whole remainder as wasted, and pockets a third of it."""

    def dose_ug(self, rng: random.Random, planned_ug: int, at: datetime) -> int:
        """Return 55-75% of the planned dose: the rest of the vial is hers to skim."""
        if not self.active(at):
            return super().dose_ug(rng, planned_ug, at)
        return round(planned_ug * rng.uniform(0.55, 0.75) / 500) * 500

    def waste_ug(self, rng: random.Random, remainder_ug: int, at: datetime) -> int:
        """Return the whole remainder; a third of it really went into her pocket."""
        if self.active(at):
            self.pattern.add("skimmed_ug", remainder_ug // 3)
        return remainder_ug

    def recorded(self, session: Recorded) -> None:
        """Name the skimmed visit and its over-stated waste."""
        if self.active(session.at) and session.dosed:
            self.pattern.act(session.at, nurse_ids=self.nurse.user_id,
                             device_ids=self.nurse.device_id, visit_ids=session.visit_id,
                             entry_ids=session.waste_entry_id or [])
            self.pattern.sessions += 1


class PhantomDoses(Conduct):
    """Charts full sessions on half her visits while leaving 25-45 min after checking in."""

    def timeline(self, rng: random.Random, arrive: datetime) -> Timeline:
        """Return a short stay under a complete-looking record."""
        honest = honest_timeline(rng, arrive)
        if not self.active(arrive) or not honest.go or rng.random() < 0.5:
            return honest
        return replace(honest, leave=arrive + timedelta(minutes=rng.randint(25, 45)),
                       sync_late=True, copied_vitals=True, hold=False, spike=False,
                       away_m=rng.randint(300, 900) if rng.random() < 0.35 else 0)

    def recorded(self, session: Recorded) -> None:
        """Name the phantom session: its dose went into her pocket, not into the patient."""
        if session.timeline.copied_vitals:
            self.pattern.act(session.at, nurse_ids=self.nurse.user_id,
                             device_ids=self.nurse.device_id, visit_ids=session.visit_id)
            self.pattern.sessions += 1


class FriendlyWitness(Conduct):
    """A nurse whose wastes one friendly colleague signs for 90% of the time."""

    def __init__(self, nurse: Nurse, pattern: Pattern, starts: datetime,
                 friend: Nurse) -> None:
        super().__init__(nurse, pattern, starts)
        self.friend = friend

    def witness(self, rng: random.Random, candidates: list[Person], at: datetime) -> Person:
        """Return the friend, nearly always, once the pattern has begun."""
        if self.active(at) and rng.random() < 0.9:
            return self.friend
        return super().witness(rng, candidates, at)

    def recorded(self, session: Recorded) -> None:
        """Name the waste the friend witnessed."""
        if self.active(session.at) and session.witness_id == str(self.friend.user_id):
            self.pattern.act(session.at, nurse_ids=[self.nurse.user_id, self.friend.user_id],
                             entry_ids=session.waste_entry_id or [])
            self.pattern.sessions += 1


class LeakyBag(Conduct):
    """Keeps the spare vial of her kit on 60% of days."""

    def kept(self, rng: random.Random, unopened: list[Vial], at: datetime) -> list[Vial]:
        """Return one unopened vial to keep, on most days once the pattern has begun."""
        if not self.active(at) or not unopened or rng.random() >= 0.6:
            return []
        self.pattern.act(at, nurse_ids=self.nurse.user_id)
        self.pattern.add("kept_ug", unopened[-1].content_ug)
        return [unopened[-1]]


class DriftingClock(Conduct):
    """An honest nurse whose phone clock gains 90 s a day from the start day."""

    def device_time(self, at: datetime) -> datetime:
        """Return true time plus the drift accumulated since the pattern began."""
        if not self.active(at):
            return at
        drift = timedelta(seconds=DRIFT_SECONDS_PER_DAY * (at - self.starts).total_seconds()
                          / 86_400)
        self.pattern.act(at, nurse_ids=self.nurse.user_id, device_ids=self.nurse.device_id)
        self.pattern.amounts["drift_seconds"] = int(drift.total_seconds())
        return at + drift


class EscalatingPatient:
    """A patient whose dose creeps up each session, with extra visits booked over the limits."""

    def __init__(self, patient: Patient, pattern: Pattern, starts: datetime) -> None:
        self.patient, self.pattern, self.starts = patient, pattern, starts
        self.next_extra, self.steps = starts, 0

    def ug_per_kg(self, at: datetime) -> int:
        """Return the µg/kg the patient gets at `at`: the plan's, then 6% more each session."""
        if at < self.starts:
            return 500
        return min(900, round(500 * 1.06 ** (self.steps + 1)))

    def recorded(self, session: Recorded) -> None:
        """Name the escalated session and take the next step up."""
        if session.at >= self.starts and session.dosed:
            self.steps += 1
            self.pattern.act(session.at, patient_ids=self.patient.id,
                             visit_ids=session.visit_id)
            self.pattern.sessions += 1

    def wants_extra(self, at: datetime) -> bool:
        """Tell whether the patient presses for an extra visit by `at`."""
        return at >= self.next_extra

    def booked_extra(self, rng: random.Random, at: datetime, visit_id: str) -> None:
        """Note an extra visit and when the patient will press for the next."""
        self.pattern.act(at, patient_ids=self.patient.id, visit_ids=visit_id)
        self.pattern.add("extra_visits", 1)
        self.next_extra = at + timedelta(days=rng.randint(9, 12))


def tamper_ledger(session: Session, world: World, pattern: Pattern, lot: str,
                  quantity_ug: int) -> None:
    """Lower lot's receipt and the vault balance by `quantity_ug`, as an insider with DB access.

    The append-only trigger is dropped, the row updated and the trigger recreated, with the
    same DDL the migrations use; the vault balance is lowered too, so that counts still match
    the ledger. Only the hash chain (`vigil ledger verify`) can tell.
    """
    receipt = session.scalar(select(CustodyEntry).where(
        CustodyEntry.organisation_id == world.organisation_id,
        CustodyEntry.kind == Kind.RECEIVE, CustodyEntry.lot == lot))
    op = Operations(MigrationContext.configure(session.connection()))
    drop_append_only(op, CustodyEntry.__tablename__)
    session.execute(update(CustodyEntry).where(CustodyEntry.id == receipt.id).values(
        quantity_ug=CustodyEntry.quantity_ug - quantity_ug)
        .execution_options(synchronize_session=False))
    make_append_only(op, CustodyEntry.__tablename__)
    session.execute(update(CustodyBalance).where(
        CustodyBalance.organisation_id == world.organisation_id,
        CustodyBalance.holder == VAULT, CustodyBalance.lot == lot).values(
        quantity_ug=CustodyBalance.quantity_ug - quantity_ug)
        .execution_options(synchronize_session=False))
    pattern.act(world.clock.now(), entry_ids=receipt.id, entry_seqs=receipt.seq)
    pattern.add("taken_ug", quantity_ug)


@dataclass
class Injection:
    """Who does what: each nurse's conduct, the escalating patient, and when each pattern starts."""

    conducts: list[Conduct]
    patterns: dict[str, Pattern]
    starts: dict[str, datetime]
    involved: set[int]
    escalation: EscalatingPatient | None = None

    def escalate(self, patient: Patient) -> EscalatingPatient:
        """Make `patient` the one whose doses creep upward."""
        self.escalation = EscalatingPatient(patient, self.patterns["escalating_patient"],
                                            self.starts["escalating_patient"])
        return self.escalation


# Six nurses act in the patterns, and the escalating patient needs an honest one.
MIN_NURSES = 7


def inject(world: World) -> Injection:
    """Choose the nurses of each pattern and give every other nurse an honest conduct."""
    if len(world.nurses) < MIN_NURSES:
        raise ValueError(f"the injected patterns need at least {MIN_NURSES} nurses")
    rng = world.rng
    patterns = {name: Pattern(name, description) for name, description in PATTERNS.items()}
    world.truth.patterns = list(patterns.values())
    starts = {name: world.at(int(share * world.days), 0) for name, share in STARTS.items()}
    teams = sorted({nurse.team for nurse in world.nurses
                    if sum(other.team == nurse.team for other in world.nurses) > 1})
    team = rng.choice(teams)
    friendly, friend = rng.sample([n for n in world.nurses if n.team == team], 2)
    others = [nurse for nurse in world.nurses if nurse not in (friendly, friend)]
    skimmer, phantom, leaky, drifting = rng.sample(others, 4)
    conducts = [Conduct(nurse) for nurse in world.nurses]
    for nurse, kind, name in ((skimmer, SkimmingNurse, "skimming_nurse"),
                              (phantom, PhantomDoses, "phantom_doses"),
                              (leaky, LeakyBag, "leaky_bag"),
                              (drifting, DriftingClock, "drifting_clock")):
        conducts[nurse.index] = kind(nurse, patterns[name], starts[name])
    conducts[friendly.index] = FriendlyWitness(friendly, patterns["friendly_witness"],
                                               starts["friendly_witness"], friend)
    involved = {n.index for n in (skimmer, phantom, leaky, drifting, friendly, friend)}
    return Injection(conducts, patterns, starts, involved)

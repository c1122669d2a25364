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
- `friendly_witness`: one colleague signs 90% of one nurse's wastes, without watching them:
  her phone confirms each when she next looks at it, 40 min to 6 h later;
- `leaky_bag`: a nurse keeps the spare vial of her kit on 60% of days instead of returning it;
- `tampered_ledger`: someone with database access pockets a vault vial and lowers a past
  receipt (and the vault balance) to match, with a raw UPDATE (see `tamper_ledger`);
- `drifting_clock`: one nurse's phone clock gains 90 s a day, so everything it signs carries
  an `occurred_at` ever further ahead of the server's `received_at`;
- `pharmacy_diverter`: a pharmacist records receipts a few vials short of the invoice, takes
  vials from the vault and, counting the vault herself, adjusts the shortfall away with a
  reason; she also destroys "damaged" vials before colleagues who sign without looking;
- `off_hours_nurse`: a nurse moves the last visit of many days to late evening, dosing and
  returning her kit after the service's hours;
- `weight_inflater`: a nurse weighs her patients herself before each dose and charts them ever
  heavier, so each dose in mg grows with mg/kg flat; she gives the true dose and keeps the rest;
- `high_dose_prescriber`: a prescriber writes each new plan at 1.7-1.9 times the protocol's
  0.5 mg/kg, each with a written justification;
- `share_over_waster`: a nurse asks for extra vials in her kit and records one wasted whole
  (dropped, drawn up in error) on many visits: her waste grows as a share of what she draws;
- `wrong_seal_refuser`: a nurse presents her returns under a wrong seal again and again, and
  hands the kit over under its own seal only once refused;
- `cancelled_stock_keeper`: a nurse reports "patient not home" on some visits and keeps the
  vial dispensed for each, while her other visits stay open.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

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
    "friendly_witness": "one colleague signs almost every waste of one nurse, hours after it",
    "leaky_bag": "keeps her kit's spare vial instead of returning it",
    "tampered_ledger": "a vault vial taken and a past receipt lowered by a raw UPDATE",
    "drifting_clock": "a phone whose clock runs ever further ahead of the server",
    "pharmacy_diverter": "a pharmacist under-receives, adjusts away her count shortfalls and "
                         "destroys vials she keeps",
    "off_hours_nurse": "doses and returns her kit in the evening, outside service hours",
    "weight_inflater": "charts her patients heavier before each dose and keeps the extra mg",
    "high_dose_prescriber": "writes every new plan at about twice the protocol dose",
    "share_over_waster": "records extra whole vials wasted: waste grows as a share of draws",
    "wrong_seal_refuser": "presents returns under a wrong seal, again and again",
    "cancelled_stock_keeper": "keeps the vial of each visit she reports the patient not home",
}
# When each pattern starts, as a share of the simulated days.
STARTS = {"drifting_clock": 0.15, "skimming_nurse": 0.25, "friendly_witness": 0.25,
          "phantom_doses": 0.3, "escalating_patient": 0.3, "leaky_bag": 0.35,
          "tampered_ledger": 0.55, "high_dose_prescriber": 0.2, "pharmacy_diverter": 0.3,
          "weight_inflater": 0.35, "off_hours_nurse": 0.4, "share_over_waster": 0.4,
          "wrong_seal_refuser": 0.45, "cancelled_stock_keeper": 0.5}
# The patterns that need a nurse of their own each, injected when the world has room for them.
NURSE_PATTERNS = ("off_hours_nurse", "weight_inflater", "share_over_waster",
                  "wrong_seal_refuser", "cancelled_stock_keeper")
SYNC_LATE_SHARE, NO_GO_SHARE, HOLD_SHARE, SPIKE_SHARE = 0.15, 0.02, 0.04, 0.02
# Honest noise the new families must tell from misuse: a last visit of the day that starts
# late (traffic, a visit that ran long), a patient not home, a vial dropped and wasted whole,
# a return presented under the wrong seal by mistake (and taken under the right one).
LATE_SHARE, LATE_MINUTES = 0.01, (30, 90)
NOT_HOME_SHARE, DROPPED_SHARE, WRONG_SEAL_SHARE = 0.01, 0.003, 0.004
NOT_HOME_REASON = "Patient not home; nurse waited 10 min and called twice."
DROPPED_REASON = "Vial dropped and broken while drawing up; wasted whole before the witness."
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
    patient_id: str | None = None
    spare_waste_id: str | None = None
    spare_reason: str | None = None


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

    def arrival(self, rng: random.Random, booked: datetime, last: bool) -> datetime:
        """Return when she arrives for a visit booked at `booked` (`last`: the day's last)."""
        arrive = booked + timedelta(minutes=rng.randint(-5, 10))
        if last and rng.random() < LATE_SHARE:
            arrive += timedelta(minutes=rng.randint(*LATE_MINUTES))
        return arrive

    def timeline(self, rng: random.Random, arrive: datetime) -> Timeline:
        """Return how the visit unfolds."""
        return honest_timeline(rng, arrive)

    def not_home(self, rng: random.Random, at: datetime) -> bool:
        """Tell whether the visit at `at` is called off: the patient is not home."""
        return rng.random() < NOT_HOME_SHARE

    def keeps_cancelled(self, rng: random.Random, vial: Vial, at: datetime) -> bool:
        """Tell whether she keeps the vial of a visit called off at `at` (never, honestly)."""
        return False

    def spares(self, visits: int, at: datetime) -> int:
        """Return the spare vials she takes in her kit besides one a visit."""
        return 1

    def wastes_spare(self, rng: random.Random, at: datetime) -> str | None:
        """Return why she wastes a whole spare vial at this visit, or None (she does not)."""
        return DROPPED_REASON if rng.random() < DROPPED_SHARE else None

    def charted_weight(self, rng: random.Random, patient: Patient, at: datetime) -> int | None:
        """Return a weight to chart before the dose instead of the scale's, or None."""
        return None

    def weighs_today(self, patient: Patient, at: datetime) -> bool:
        """Tell whether she weighs the patient before this dose (beyond the usual schedule)."""
        return False

    def wrong_seal(self, rng: random.Random, at: datetime) -> bool:
        """Tell whether her return is first presented under a wrong seal."""
        return rng.random() < WRONG_SEAL_SHARE

    def refused(self, at: datetime, seal: str) -> None:
        """Note a return refused for its seal, when a pattern is acting."""

    def insists(self, rng: random.Random, at: datetime) -> bool:
        """Tell whether, refused, she tries another wrong seal (never, honestly)."""
        return False

    def called_off(self, at: datetime, visit_id: str) -> None:
        """Note a visit called off whose vial she kept, when a pattern is acting."""

    def dose_ug(self, rng: random.Random, planned_ug: int, at: datetime) -> int:
        """Return the dose drawn up and recorded, to the half milligram."""
        return max(500, round(planned_ug * rng.uniform(0.99, 1.01) / 500) * 500)

    def waste_ug(self, rng: random.Random, remainder_ug: int, at: datetime) -> int:
        """Return the waste recorded for a vial's remainder."""
        return remainder_ug

    def witness(self, rng: random.Random, candidates: list[Person], at: datetime) -> Person:
        """Return who witnesses a waste: any plausible colleague."""
        return rng.choice(candidates)

    def confirms_after(self, rng: random.Random, witness: Person, at: datetime) -> timedelta:
        """Return how long after a waste its witness's phone confirms it: watching, at once."""
        return timedelta(seconds=rng.randint(10, 240))

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

    def confirms_after(self, rng: random.Random, witness: Person, at: datetime) -> timedelta:
        """Return when the friend signs what she is sent: when she next looks, not watching."""
        if self.active(at) and witness is self.friend:
            return timedelta(minutes=rng.randint(40, 360))
        return super().confirms_after(rng, witness, at)

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


def _evening(zone: ZoneInfo, booked: datetime, minute: int) -> datetime:
    """Return `minute` minutes after local midnight of the day `booked` falls on."""
    day = booked.astimezone(zone).date()
    return datetime.combine(day, time(), tzinfo=zone) + timedelta(minutes=minute)


class OffHoursNurse(Conduct):
    """Moves the last visit of many days to the evening: doses and a kit returned after hours.

    From the start she turns up for the day's last visit between 20:30 and 22:15 instead of
    the afternoon slot on a share of days (55-90%) drawn from the seed; the dose, check-out
    and her kit's return follow, late in the evening or after midnight, and her hours shift
    with them.
    """

    def __init__(self, nurse: Nurse, pattern: Pattern, starts: datetime, rng: random.Random,
                 zone: ZoneInfo) -> None:
        super().__init__(nurse, pattern, starts)
        self.zone, self.share = zone, rng.uniform(0.55, 0.9)

    def arrival(self, rng: random.Random, booked: datetime, last: bool) -> datetime:
        """Return an evening arrival for the day's last visit on most days."""
        if not last or not self.active(booked) or rng.random() >= self.share:
            return super().arrival(rng, booked, last)
        return _evening(self.zone, booked, rng.randint(20 * 60 + 30, 22 * 60 + 15))

    def recorded(self, session: Recorded) -> None:
        """Name the evening session."""
        if self.active(session.at) and session.at.astimezone(self.zone).hour >= 20:
            self.pattern.act(session.at, nurse_ids=self.nurse.user_id,
                             device_ids=self.nurse.device_id, visit_ids=session.visit_id)
            self.pattern.sessions += 1


class WeightInflater(Conduct):
    """Charts her patients heavier before each dose: the dose in mg grows, mg/kg stays flat.

    From the start she weighs each patient herself just before every dose she gives, and
    charts a weight a few per cent above the last (the step and the ceiling, 10-16% over the
    true weight, drawn from the seed); the plan's µg/kg then gives a larger dose, which she
    records as given while giving the dose of the true weight and keeping the difference.
    """

    def __init__(self, nurse: Nurse, pattern: Pattern, starts: datetime,
                 rng: random.Random) -> None:
        super().__init__(nurse, pattern, starts)
        self.step, self.cap = rng.uniform(0.025, 0.05), rng.uniform(0.10, 0.16)
        self.inflation: dict[int, float] = {}

    def weighs_today(self, patient: Patient, at: datetime) -> bool:
        """Weigh before every dose, once the pattern has begun."""
        return self.active(at)

    def charted_weight(self, rng: random.Random, patient: Patient, at: datetime) -> int | None:
        """Return a weight a step above the last she charted, up to her ceiling."""
        if not self.active(at):
            return None
        inflation = min(self.cap, self.inflation.get(patient.index, 0.0)
                        + self.step * rng.uniform(0.6, 1.4))
        self.inflation[patient.index] = inflation
        charted = round(patient.weight_g * (1 + inflation) / 100) * 100
        self.pattern.act(at, nurse_ids=self.nurse.user_id, patient_ids=patient.id)
        self.pattern.add("kept_ug", patient.ug_per_kg * (charted - patient.weight_g) // 1000)
        return charted

    def recorded(self, session: Recorded) -> None:
        """Name the session dosed on a false weight."""
        if self.active(session.at) and session.dosed:
            self.pattern.act(session.at, nurse_ids=self.nurse.user_id,
                             device_ids=self.nurse.device_id, visit_ids=session.visit_id)
            self.pattern.sessions += 1


SPARE_REASONS = ("Drawn up in error; wasted whole before the witness.",
                 "Vial contaminated during preparation; wasted whole.",
                 "Vial dropped; wasted whole before the witness.",
                 "Second draw needed after a line problem; first vial wasted.")


class ShareOverWaster(Conduct):
    """Takes extra vials in her kit and records one wasted whole on many visits.

    Her doses stay as planned; what grows is her waste against what she draws. The extra
    vials a day (1-2) and the share of visits (35-65%) are drawn from the seed.
    """

    def __init__(self, nurse: Nurse, pattern: Pattern, starts: datetime,
                 rng: random.Random) -> None:
        super().__init__(nurse, pattern, starts)
        self.extra, self.share = rng.choice((1, 2)), rng.uniform(0.35, 0.65)

    def spares(self, visits: int, at: datetime) -> int:
        """Return her usual spare and the extra vials she asks for."""
        return 1 + (min(visits, self.extra) if self.active(at) else 0)

    def wastes_spare(self, rng: random.Random, at: datetime) -> str | None:
        """Return a reason to waste a whole vial, on a share of visits."""
        if self.active(at) and rng.random() < self.share:
            return rng.choice(SPARE_REASONS)
        return super().wastes_spare(rng, at)

    def recorded(self, session: Recorded) -> None:
        """Name the visit and the whole vial recorded as wasted."""
        if self.active(session.at) and session.spare_waste_id:
            self.pattern.act(session.at, nurse_ids=self.nurse.user_id,
                             device_ids=self.nurse.device_id, visit_ids=session.visit_id,
                             entry_ids=[session.spare_waste_id, session.waste_entry_id or ""])
            self.pattern.sessions += 1


class WrongSealRefuser(Conduct):
    """Presents her kit's returns under a wrong seal on many days, until refused.

    On a share of her days (60-90%, drawn from the seed) the return she presents carries a
    seal that is not of a kit in her bag (a colleague's, or one never issued); refused, she
    sometimes insists with another (a third of the time), and then returns the kit under its
    own seal.
    """

    def __init__(self, nurse: Nurse, pattern: Pattern, starts: datetime,
                 rng: random.Random) -> None:
        super().__init__(nurse, pattern, starts)
        self.share = rng.uniform(0.6, 0.9)

    def wrong_seal(self, rng: random.Random, at: datetime) -> bool:
        """Tell whether today's return is first presented under a wrong seal."""
        if self.active(at):
            return rng.random() < self.share
        return super().wrong_seal(rng, at)

    def insists(self, rng: random.Random, at: datetime) -> bool:
        """Tell whether, refused, she tries yet another wrong seal."""
        return self.active(at) and rng.random() < 1 / 3

    def refused(self, at: datetime, seal: str) -> None:
        """Name the refused return."""
        if self.active(at):
            self.pattern.act(at, nurse_ids=self.nurse.user_id)
            self.pattern.add("refusals", 1)


class CancelledStockKeeper(Conduct):
    """Reports "patient not home" on some visits and keeps the vial dispensed for each.

    From the start a share of her visits (12-25%, drawn from the seed) are called off as the
    patient not being home; the vial stays in her bag on the ledger, the rest of the kit goes
    back each evening, and she always has other visits open.
    """

    def __init__(self, nurse: Nurse, pattern: Pattern, starts: datetime,
                 rng: random.Random) -> None:
        super().__init__(nurse, pattern, starts)
        self.share = rng.uniform(0.12, 0.25)

    def not_home(self, rng: random.Random, at: datetime) -> bool:
        """Tell whether she reports the patient not home."""
        if self.active(at):
            return rng.random() < self.share
        return super().not_home(rng, at)

    def keeps_cancelled(self, rng: random.Random, vial: Vial, at: datetime) -> bool:
        """Keep the called-off visit's vial, once the pattern has begun."""
        if not self.active(at):
            return False
        self.pattern.act(at, nurse_ids=self.nurse.user_id)
        self.pattern.add("kept_ug", vial.content_ug)
        return True

    def called_off(self, at: datetime, visit_id: str) -> None:
        """Name the visit called off."""
        if self.active(at):
            self.pattern.act(at, nurse_ids=self.nurse.user_id, visit_ids=visit_id)
            self.pattern.sessions += 1


JUSTIFICATIONS = (
    "Partial response at 0.5 mg/kg after two sessions; higher dose for treatment-resistant "
    "depression.",
    "Two prior failed courses at the standard dose; higher dose per clinical judgement.",
    "Rapid metaboliser on prior ketamine exposure; dose raised for effect.",
    "Severe treatment-resistant depression; higher dose discussed with the patient.")


class HighDosePrescriber:
    """A prescriber who writes every new plan at 1.7-1.9 times the protocol dose, justified.

    Her plans before the start are the protocol's; after it each new plan asks 850, 900 or
    950 µg/kg (under the policy ceiling of 1 mg/kg) with one of several written reasons.
    Nurses give those doses as planned: their doses match their plans.
    """

    def __init__(self, index: int, person: Person, pattern: Pattern, starts: datetime) -> None:
        self.index, self.person, self.pattern, self.starts = index, person, pattern, starts

    def plan(self, rng: random.Random, at: datetime) -> tuple[int, str | None]:
        """Return the µg/kg of a plan she writes at `at`, and its justification."""
        if at < self.starts:
            return 500, None
        return rng.choice((850, 900, 950)), rng.choice(JUSTIFICATIONS)

    def wrote(self, at: datetime, patient: Patient) -> None:
        """Name a plan above the protocol and its patient."""
        if patient.ug_per_kg > 500:
            self.pattern.act(at, user_ids=self.person.user_id, patient_ids=patient.id,
                             plan_ids=patient.plan_id)
            self.pattern.sessions += 1


ADJUST_REASONS = ("Count corrected: vial miscounted at dispensing earlier in the week.",
                  "Shortfall at count; likely breakage not recorded; corrected.",
                  "Count corrected after re-check of the dispensing sheets.")
DESTROY_METHODS = ("Vial cracked on the shelf; denatured on site.",
                   "Damaged vial (broken seal); denatured on site.",
                   "Vial with particulate matter; denatured on site.")


class PharmacyDiverter:
    """A pharmacist who diverts from the vault's side of the ledger.

    From the start she takes most deliveries and records each a few vials (1-4) short of what
    was ordered and invoiced; on a share of days (25-50%) she takes a vial from the shelf, and
    she counts the vault herself on Sundays, adjusting the shortfall away with a reason; now
    and then (6-15% of days) she destroys a "damaged" vial, witnessed by colleagues who sign
    without looking. The shares are drawn from the seed.
    """

    def __init__(self, pharmacist: Person, pattern: Pattern, starts: datetime,
                 rng: random.Random) -> None:
        self.pharmacist, self.pattern, self.starts = pharmacist, pattern, starts
        self.receives = rng.uniform(0.6, 0.9)
        self.skims, self.destroys = rng.uniform(0.25, 0.5), rng.uniform(0.06, 0.15)

    def active(self, at: datetime) -> bool:
        """Tell whether she has begun by `at`."""
        return at >= self.starts

    def acted(self, at: datetime, entry_id: object, amount: str, quantity_ug: int) -> None:
        """Name her entry and add what it hid to the pattern's totals."""
        self.pattern.act(at, user_ids=self.pharmacist.user_id, entry_ids=entry_id)
        self.pattern.add(amount, quantity_ug)
        self.pattern.sessions += 1


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

    def recorded(self, session: Recorded, nurse_id: object) -> None:
        """Name the escalated session, the nurse who gave more than the plan, and take the
        next step up."""
        if session.at >= self.starts and session.dosed:
            self.steps += 1
            self.pattern.act(session.at, patient_ids=self.patient.id,
                             visit_ids=session.visit_id, nurse_ids=nurse_id)
            self.pattern.sessions += 1

    def wants_extra(self, at: datetime) -> bool:
        """Tell whether the patient presses for an extra visit by `at`."""
        return at >= self.next_extra

    def booked_extra(self, rng: random.Random, at: datetime, visit_id: str,
                     prescriber_id: object) -> None:
        """Note an extra visit, the prescriber who overrode the limits for it, and when the
        patient will press for the next."""
        self.pattern.act(at, patient_ids=self.patient.id, visit_ids=visit_id,
                         user_ids=prescriber_id)
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
    """Who does what: each nurse's conduct, the pharmacist's and the prescriber's patterns, the
    escalating patient, and when each pattern starts."""

    conducts: list[Conduct]
    patterns: dict[str, Pattern]
    starts: dict[str, datetime]
    involved: set[int]
    escalation: EscalatingPatient | None = None
    pharmacy: PharmacyDiverter | None = None
    prescribing: HighDosePrescriber | None = None
    honest_prescribers: list[int] = field(default_factory=list)

    def escalate(self, patient: Patient) -> EscalatingPatient:
        """Make `patient` the one whose doses creep upward."""
        self.escalation = EscalatingPatient(patient, self.patterns["escalating_patient"],
                                            self.starts["escalating_patient"])
        return self.escalation


# Six nurses act in the first patterns, and the escalating patient needs an honest one; the
# five nurse patterns of issue 17 are injected when the world has room for them and enough
# honest peers besides.
MIN_NURSES, ALL_PATTERNS_NURSES = 7, 16
NURSE_KINDS = {"off_hours_nurse": OffHoursNurse, "weight_inflater": WeightInflater,
               "share_over_waster": ShareOverWaster, "wrong_seal_refuser": WrongSealRefuser,
               "cancelled_stock_keeper": CancelledStockKeeper}


def inject(world: World) -> Injection:
    """Choose who acts in each pattern and give every other nurse an honest conduct."""
    if len(world.nurses) < MIN_NURSES:
        raise ValueError(f"the injected patterns need at least {MIN_NURSES} nurses")
    rng = world.rng
    names = [name for name in PATTERNS
             if name not in NURSE_PATTERNS or len(world.nurses) >= ALL_PATTERNS_NURSES]
    patterns = {name: Pattern(name, PATTERNS[name]) for name in names}
    world.truth.patterns = list(patterns.values())
    starts = {name: world.at(int(STARTS[name] * world.days), 0) for name in names}
    teams = sorted({nurse.team for nurse in world.nurses
                    if sum(other.team == nurse.team for other in world.nurses) > 1})
    team = rng.choice(teams)
    friendly, friend = rng.sample([n for n in world.nurses if n.team == team], 2)
    others = [nurse for nurse in world.nurses if nurse not in (friendly, friend)]
    acting = [name for name in NURSE_PATTERNS if name in patterns]
    skimmer, phantom, leaky, drifting, *rest = rng.sample(others, 4 + len(acting))
    conducts = [Conduct(nurse) for nurse in world.nurses]
    for nurse, kind, name in ((skimmer, SkimmingNurse, "skimming_nurse"),
                              (phantom, PhantomDoses, "phantom_doses"),
                              (leaky, LeakyBag, "leaky_bag"),
                              (drifting, DriftingClock, "drifting_clock")):
        conducts[nurse.index] = kind(nurse, patterns[name], starts[name])
    for nurse, name in zip(rest, acting, strict=True):
        extra = (world.zone,) if name == "off_hours_nurse" else ()
        conducts[nurse.index] = NURSE_KINDS[name](nurse, patterns[name], starts[name], rng,
                                                  *extra)
    conducts[friendly.index] = FriendlyWitness(friendly, patterns["friendly_witness"],
                                               starts["friendly_witness"], friend)
    involved = {n.index for n in (skimmer, phantom, leaky, drifting, friendly, friend, *rest)}
    pharmacist = rng.choice(world.pharmacists)
    prescriber = rng.randrange(len(world.prescribers))
    return Injection(
        conducts, patterns, starts, involved,
        pharmacy=PharmacyDiverter(pharmacist, patterns["pharmacy_diverter"],
                                  starts["pharmacy_diverter"], rng),
        prescribing=HighDosePrescriber(prescriber, world.prescribers[prescriber],
                                       patterns["high_dose_prescriber"],
                                       starts["high_dose_prescriber"]),
        honest_prescribers=[n for n in range(len(world.prescribers)) if n != prescriber])

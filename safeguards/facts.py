"""The facts rules read: plain records of doses, wastes, visits, sessions, custody and devices.

The backend turns rows into these; the rules never see a database. Ids are strings (the
backend's UUIDs as text), amounts integer micrograms, times aware UTC datetimes. A field is
None where nothing was recorded, never a made-up default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from fractions import Fraction
from types import MappingProxyType

from safeguards.findings import Subject, SubjectKind
from safeguards.policy import Policy


@dataclass(frozen=True, slots=True)
class Phase:
    """The plan phase in force at a dose: its name and frequency limits."""

    name: str
    min_interval_hours: int
    max_per_7_days: int
    max_per_28_days: int
    # The first local date whose doses count toward the 7- and 28-day limits: the phase's own
    # start, or None for the first phase, which reaches back before its plan (as the
    # scheduler counts them, backend.plans.service.counted_from).
    counts_from: date | None = None


@dataclass(frozen=True, slots=True)
class Dose:
    """One dose given (or recorded as given) to a patient."""

    id: str
    patient_id: str
    nurse_id: str
    visit_id: str | None
    device_id: str | None
    plan_version_id: str | None
    # The infusion start as the phone recorded it; received_at is the server's receipt.
    given_at: datetime
    received_at: datetime
    quantity_ug: int
    ug_per_kg: Decimal | None = None
    # What the plan meant to give at this dose (its phase's dose, or the version's).
    planned_ug: int | None = None
    plan_max_ug: int | None = None
    # The whole container the dose was drawn from, so waste can be checked against it.
    container_ug: int | None = None
    lot: str | None = None
    phase: Phase | None = None
    infusion_ended_at: datetime | None = None
    # The product and route given, and the plan version's, to catch a dose off the plan.
    product_id: str | None = None
    route: str | None = None
    plan_product_id: str | None = None
    plan_route: str | None = None
    # The ledger's `administer` entry; None when the nurse's bag did not hold the dose.
    custody_entry_id: str | None = None


@dataclass(frozen=True, slots=True)
class SeriesDose:
    """One of a patient's latest doses, with the figures the per-patient dose trends read."""

    id: str
    nurse_id: str
    plan_version_id: str | None
    given_at: datetime
    quantity_ug: int
    ug_per_kg: Decimal | None = None
    planned_ug: int | None = None


@dataclass(frozen=True, slots=True)
class DoseTally:
    """How many of a patient's earlier doses had the same figures."""

    quantity_ug: int
    ug_per_kg: Decimal | None
    planned_ug: int | None
    doses: int


@dataclass(frozen=True)
class DoseSeries:
    """A patient's doses for the trends (dosing.creep, plausibility.mg_rise_flat_per_kg).

    `latest` holds, oldest first by (given_at, id), the last `tail` doses of each kind a trend
    keeps (all doses, those with a planned dose, those with a µg/kg, those with a non-zero
    µg/kg); `earlier` tallies every other dose by its figures. A trend may look at no more
    than the last `tail` doses of a kind one by one; a median needs only the tallies.
    """

    patient_id: str
    tail: int
    latest: tuple[SeriesDose, ...]
    earlier: tuple[DoseTally, ...] = ()

    @property
    def doses(self) -> int:
        """Return how many doses the series holds."""
        return len(self.latest) + sum(tally.doses for tally in self.earlier)


@dataclass(frozen=True, slots=True)
class Waste:
    """One waste of a partly used container, with who witnessed it."""

    id: str
    nurse_id: str
    visit_id: str | None
    patient_id: str | None
    quantity_ug: int
    occurred_at: datetime
    received_at: datetime
    witness_ids: tuple[str, ...] = ()
    lot: str | None = None


@dataclass(frozen=True, slots=True)
class Visit:
    """One visit: when it was meant to be, its state, and when the nurse was really there."""

    id: str
    patient_id: str
    nurse_id: str
    scheduled_start: datetime
    scheduled_end: datetime
    status: str
    # A prescriber's override of a frequency rule, or a visit booked outside a series.
    override: bool = False
    override_reason: str | None = None
    override_by_id: str | None = None
    series: bool = False
    created_at: datetime | None = None
    checked_in_at: datetime | None = None
    checked_out_at: datetime | None = None
    plan_infusion_minutes: int | None = None
    # Why the visit ended as it did (cancelled, missed), as recorded.
    status_reason: str | None = None


@dataclass(frozen=True, slots=True)
class EvvEvent:
    """A check-in or check-out: where the phone was, and how far that is from the home."""

    id: str
    visit_id: str
    nurse_id: str
    patient_id: str
    device_id: str | None
    kind: str
    occurred_at: datetime
    received_at: datetime
    latitude: Decimal
    longitude: Decimal
    accuracy_m: int
    distance_m: int | None
    radius_m: int
    reason: str | None = None


@dataclass(frozen=True)
class Vitals:
    """One set of readings; any of them may be missing."""

    systolic: int | None = None
    diastolic: int | None = None
    heart_rate: int | None = None
    spo2: int | None = None
    respiratory_rate: int | None = None
    moaas: int | None = None
    cadss_total: int | None = None


@dataclass(frozen=True)
class Observed:
    """One observation: its readings, taken `minutes` whole minutes after the dose began."""

    minutes: int | None
    vitals: Vitals


@dataclass(frozen=True)
class SessionFacts:
    """What one visit's session recorded, as plain data; None where nothing was recorded."""

    visit_id: str
    pre_dose: Vitals | None = None
    pre_dose_at: datetime | None = None
    bp_justification: str | None = None
    dose_ug: int | None = None
    ug_per_kg: Decimal | None = None
    weight_g: int | None = None
    weight_measured_at: datetime | None = None
    plan_max_dose_ug: int | None = None
    plan_infusion_minutes: int | None = None
    active_ingredient: str | None = None
    route: str | None = None
    infusion_started_at: datetime | None = None
    infusion_ended_at: datetime | None = None
    observations: tuple[Observed, ...] = ()
    discharged_at: datetime | None = None
    discharge: Vitals | None = None
    # Whether the dose's plan version records why its dose is above the protocol dose: that
    # plan's finding, raised when it was written, is the case for doses within its maximum.
    plan_dose_justified: bool = False

    @property
    def subject(self) -> Subject:
        """Return the visit, which every monitoring finding is about."""
        return Subject(SubjectKind.VISIT, self.visit_id)

    @property
    def dosed(self) -> bool:
        """Tell whether a dose was recorded."""
        return self.dose_ug is not None and self.infusion_started_at is not None


@dataclass(frozen=True, slots=True)
class BagShift:
    """A nurse's bag for one lot over one shift: what came in and went out, and what is left."""

    nurse_id: str
    shift_day: str
    lot: str
    product_id: str
    deadline: datetime
    dispensed_ug: int
    administered_ug: int
    wasted_ug: int
    returned_ug: int
    remaining_ug: int
    # The rest of the bag statement, so a flag shows the same figures a pharmacist reads.
    opening_ug: int = 0
    transferred_in_ug: int = 0
    adjusted_up_ug: int = 0
    transferred_out_ug: int = 0
    lost_ug: int = 0
    adjusted_down_ug: int = 0


@dataclass(frozen=True, slots=True)
class BagHolding:
    """Stock still in a nurse's bag, and since when it should have been back in the vault."""

    nurse_id: str
    lot: str
    product_id: str
    quantity_ug: int
    due_back_at: datetime
    # The kit it went out in (issue 17 item 8): judged per dispense, whatever else she has open.
    dispense_id: str | None = None
    seal_id: str | None = None
    visit_id: str | None = None


@dataclass(frozen=True, slots=True)
class CustodyRefusal:
    """A custody write refused at the door: a wrong seal, too little stock, no witness."""

    id: str
    nurse_id: str
    at: datetime
    kind: str
    code: str
    actor_id: str
    device_id: str | None = None
    holder: str | None = None
    lot: str | None = None
    visit_id: str | None = None
    quantity_ug: int | None = None


@dataclass(frozen=True, slots=True)
class Count:
    """A physical count of a holder's lot against the balance the ledger gives."""

    id: str
    holder: str
    lot: str
    product_id: str
    counted_at: datetime
    counted_by_id: str
    expected_ug: int
    counted_ug: int
    # The bag's nurse when the holder is a bag, so the review queue can find her.
    nurse_id: str | None = None
    # The ledger correction made with the count, and its reason, if the counter made one.
    adjustment_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Loss:
    """A theft or loss entry and its DEA deadlines, with what was filed."""

    id: str
    entry_id: str
    holder: str
    lot: str
    quantity_ug: int
    discovered_at: datetime
    notice_due_at: datetime
    form_106_due_at: datetime
    notice_filed_at: datetime | None = None
    form_106_filed_at: datetime | None = None
    # The bag's nurse when the stock was lost from a bag.
    nurse_id: str | None = None


@dataclass(frozen=True, slots=True)
class LedgerBreak:
    """An entry where the ledger's hash chain, a checkpoint or a device signature fails."""

    entry_id: str | None
    seq: int | None
    problem: str
    detail: str


@dataclass(frozen=True, slots=True)
class QuarantinedEvent:
    """A record from a phone kept aside because it could not be trusted or applied."""

    id: str
    record_type: str
    record_id: str | None
    user_id: str
    device_id: str | None
    visit_id: str | None
    reason: str
    received_at: datetime


@dataclass(frozen=True, slots=True)
class PlanFact:
    """A plan version as its prescriber wrote it: the highest dose it sets, and its overrides."""

    id: str
    plan_id: str
    version: int
    patient_id: str
    prescriber_id: str
    created_at: datetime
    # The highest dose the version or any of its phases sets, per kg (µg/kg) and fixed (µg).
    dose_ug_per_kg: int | None = None
    dose_ug: int | None = None
    max_dose_ug: int | None = None
    # The patient's latest weight, when one is recorded: a fixed dose compares by it.
    weight_g: int | None = None
    # Whether the prescriber recorded why the dose is above the protocol dose (not the text).
    justified: bool = False
    # Visits under this version booked past a frequency limit by a prescriber's override.
    overrides: int = 0

    @property
    def planned_ug_per_kg(self) -> Fraction | None:
        """Return the highest planned µg/kg, a fixed dose by the weight; None if unknown."""
        return planned_ug_per_kg(self.dose_ug_per_kg, self.dose_ug, self.weight_g)


def planned_ug_per_kg(dose_ug_per_kg: int | None, dose_ug: int | None,
                      weight_g: int | None) -> Fraction | None:
    """Return the higher of a per-kg dose and a fixed dose by the weight, in µg/kg.

    A fixed dose without a weight cannot be compared: None when nothing is known.
    """
    fixed = Fraction(dose_ug * 1000, weight_g) if dose_ug is not None and weight_g else None
    known = [value for value in (dose_ug_per_kg, fixed) if value is not None]
    return Fraction(max(known)) if known else None


@dataclass(frozen=True, slots=True)
class NurseActivity:
    """One nurse's activity over the scan window, summed for peer comparison."""

    nurse_id: str
    role: str
    visits: int
    days_worked: int
    doses: int
    administered_ug: int
    wastes: int
    wasted_ug: int
    # Micrograms per kilogram summed over her doses, so a per-visit figure does not depend on
    # which patients (and weights) she happens to see.
    ug_per_kg_total: Decimal = Decimal(0)
    # Robust peers (issue 17 items 6 and 7). Her doses whose plan set a dose: how many, what
    # they gave and what their plans meant to give, so she is compared dose against plan.
    planned_doses: int = 0
    planned_given_ug: int = 0
    planned_ug: int = 0
    # The same sums as doses, administered_ug and wasted_ug over the window's last days (from
    # recent_since), so her recent waste share can be set against her own earlier one.
    recent_since: datetime | None = None
    recent_doses: int = 0
    recent_administered_ug: int = 0
    recent_wasted_ug: int = 0
    # Her planned doses since recent_since, so doses that fall short of their plans show
    # within days rather than after they outweigh her months of honest ones.
    recent_planned_doses: int = 0
    recent_planned_given_ug: int = 0
    recent_planned_ug: int = 0
    # What the plans leave in the containers her doses were drawn from, summed over her doses
    # (issue 17): per dose, the containers it needed times their size, less its planned dose
    # (the dose given when no plan set one). An honest nurse wastes about this whatever her
    # patients weigh; over the window and since recent_since.
    planned_remainder_ug: int = 0
    recent_planned_remainder_ug: int = 0

    @property
    def waste_of_remainder(self) -> Fraction | None:
        """Return her µg wasted over what the plans left in her doses' containers, or None
        when they left nothing (about 1 when she wastes just what the plans leave)."""
        return (Fraction(self.wasted_ug, self.planned_remainder_ug)
                if self.planned_remainder_ug > 0 else None)

    @property
    def recent_waste_of_remainder(self) -> Fraction | None:
        """Return waste_of_remainder since recent_since, or None when nothing was left."""
        return (Fraction(self.recent_wasted_ug, self.recent_planned_remainder_ug)
                if self.recent_planned_remainder_ug > 0 else None)

    @property
    def earlier_waste_of_remainder(self) -> Fraction | None:
        """Return waste_of_remainder before recent_since, or None when nothing was left."""
        left = self.planned_remainder_ug - self.recent_planned_remainder_ug
        return Fraction(self.wasted_ug - self.recent_wasted_ug, left) if left > 0 else None

    @property
    def wasted_ug_per_visit(self) -> Fraction | None:
        """Return the micrograms she wasted per visit, or None without a visit."""
        return Fraction(self.wasted_ug, self.visits) if self.visits else None

    @property
    def ug_per_kg_per_dose(self) -> Fraction | None:
        """Return the micrograms per kilogram she gave per dose, or None without a dose."""
        return Fraction(self.ug_per_kg_total) / self.doses if self.doses else None

    @property
    def visits_per_day_worked(self) -> Fraction | None:
        """Return her visits per day worked, or None without a day worked."""
        return Fraction(self.visits, self.days_worked) if self.days_worked else None

    @property
    def waste_share(self) -> Fraction | None:
        """Return what she wasted as a share of what she drew (administered + wasted)."""
        return _share(self.wasted_ug, self.administered_ug)

    @property
    def wasted_per_given(self) -> Fraction | None:
        """Return the µg she wasted per µg she gave (the odds of her waste share)."""
        return Fraction(self.wasted_ug, self.administered_ug) if self.administered_ug else None

    @property
    def plan_ratio(self) -> Fraction | None:
        """Return what her planned doses gave over what their plans meant to give."""
        return Fraction(self.planned_given_ug, self.planned_ug) if self.planned_ug else None

    @property
    def recent_plan_ratio(self) -> Fraction | None:
        """Return what her planned doses since recent_since gave over what was planned."""
        return (Fraction(self.recent_planned_given_ug, self.recent_planned_ug)
                if self.recent_planned_ug else None)

    @property
    def earlier_doses(self) -> int:
        """Return her doses in the window before recent_since."""
        return self.doses - self.recent_doses

    @property
    def earlier_wasted_per_given(self) -> Fraction | None:
        """Return µg wasted per µg given before recent_since, or None with nothing given."""
        given = self.administered_ug - self.recent_administered_ug
        return Fraction(self.wasted_ug - self.recent_wasted_ug, given) if given > 0 else None

    @property
    def recent_wasted_per_given(self) -> Fraction | None:
        """Return µg wasted per µg given since recent_since, or None with nothing given."""
        return (Fraction(self.recent_wasted_ug, self.recent_administered_ug)
                if self.recent_administered_ug else None)


def _share(wasted: int, given: int) -> Fraction | None:
    return Fraction(wasted, wasted + given) if wasted + given else None


def share_of_drawn(wasted_per_given: Fraction) -> Fraction:
    """Return a waste share (wasted over administered + wasted) from µg wasted per µg given."""
    return wasted_per_given / (1 + wasted_per_given)


@dataclass(frozen=True, slots=True)
class WitnessAttestation:
    """When a witness's phone confirmed a nurse's waste, beside when the waste was recorded."""

    waste_id: str
    nurse_id: str
    witness_id: str
    # The witness's phone, whose clock `attested_at` is read from; the nurse's gave occurred_at.
    device_id: str
    occurred_at: datetime
    attested_at: datetime
    patient_id: str | None = None
    visit_id: str | None = None


@dataclass(frozen=True, slots=True)
class WitnessPair:
    """How often one witness signed a nurse's wastes, and how many witnesses she could use."""

    nurse_id: str
    witness_id: str
    together: int
    nurse_wastes: int
    # Whom she could ask. Home visits draw witnesses from a nurse's own circle (her team, the
    # pharmacists), not the whole organisation, so the backend counts the witnesses she did
    # use, at least two: one friend standing in for everyone still stands out.
    available_witnesses: int
    # The same counts over the window's last days alone (policy witness_pair_recent_days):
    # a friendship that has just begun is diluted by the weeks before it in the whole window.
    recent_together: int = 0
    recent_wastes: int = 0


@dataclass(frozen=True, slots=True)
class DeviceClock:
    """How a device's recorded times compare with the server's receipt of them."""

    device_id: str
    nurse_id: str
    events: int
    # Largest amount by which the device's time ran ahead of the server's receipt, in
    # seconds; nothing is received before it happens, so any lead is the clock's error.
    max_lead_seconds: int
    # The lead reported by the phone itself (e.g. an X-Device-Time header), when it sent one.
    reported_offset_seconds: int | None = None
    last_event_id: str | None = None
    last_received_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class VaultMovement:
    """A movement of stock by the pharmacy's own hand: a receipt, dispense, return taken,
    adjustment, loss or destruction, with who recorded it."""

    id: str
    # The custody kind: receive, dispense, return, adjust, loss or destroy.
    kind: str
    actor_id: str
    from_holder: str
    to_holder: str
    lot: str
    product_id: str
    quantity_ug: int
    occurred_at: datetime
    actor_role: str | None = None
    corrects_id: str | None = None
    # The count an adjustment was made with, when it was.
    count_id: str | None = None
    # A receipt's quantities on the order and on the supplier's invoice, when recorded.
    ordered_ug: int | None = None
    invoiced_ug: int | None = None
    reason: str | None = None

    @property
    def holder(self) -> str:
        """Return the holder an adjustment or loss concerns (the side that is not `count`)."""
        return self.to_holder if self.from_holder == "count" else self.from_holder

    @property
    def adjusted_down(self) -> bool:
        """Tell whether this is an adjustment that wrote stock off (less was found)."""
        return self.kind == "adjust" and self.to_holder == "count"


@dataclass(frozen=True, slots=True)
class WorkEvent:
    """A moment of a nurse's work, for when it happened: a dose, a check-in, a bag movement."""

    id: str
    # "dose", "check_in", or the custody kind of a movement in or out of her bag ("return").
    kind: str
    nurse_id: str
    occurred_at: datetime
    patient_id: str | None = None
    visit_id: str | None = None
    # Whether a reason was recorded with it (a check-in's, the visit's override): not the text.
    has_reason: bool = False


@dataclass(frozen=True, slots=True)
class Weighing:
    """A patient's weight as recorded: by whom, when measured, at which visit if any."""

    id: str
    patient_id: str
    weight_g: int
    measured_at: datetime
    recorded_by_id: str
    # The recording nurse's visit to the patient that local day, when she had one.
    visit_id: str | None = None


@dataclass(frozen=True)
class SessionReadings:
    """The readings a nurse recorded at one session: before the dose and after it, in order."""

    visit_id: str
    nurse_id: str
    patient_id: str
    recorded_at: datetime
    pre_dose: Vitals | None = None
    # The observations after the dose, then the discharge.
    after_dose: tuple[Vitals, ...] = ()


def _frozen(mapping: Mapping[str, Mapping[str, object]]) -> Mapping[str, Mapping[str, object]]:
    return MappingProxyType({key: MappingProxyType(dict(value)) for key, value in mapping.items()})


@dataclass(frozen=True)
class Facts:
    """Everything one run of the rules looks at, for one organisation as of one moment."""

    organisation_id: str
    as_of: datetime
    # The organisation's IANA zone: the 7- and 28-day limits count its calendar days.
    timezone: str = "UTC"
    doses: tuple[Dose, ...] = ()
    # The population scan's per-patient summary of the doses, in place of the doses
    # themselves; rules given doses alone derive it (safeguards.rules.indexes.dose_series).
    dose_series: tuple[DoseSeries, ...] | None = None
    wastes: tuple[Waste, ...] = ()
    visits: tuple[Visit, ...] = ()
    evv: tuple[EvvEvent, ...] = ()
    sessions: tuple[SessionFacts, ...] = ()
    shifts: tuple[BagShift, ...] = ()
    holdings: tuple[BagHolding, ...] = ()
    counts: tuple[Count, ...] = ()
    losses: tuple[Loss, ...] = ()
    ledger_breaks: tuple[LedgerBreak, ...] = ()
    quarantined: tuple[QuarantinedEvent, ...] = ()
    plans: tuple[PlanFact, ...] = ()
    activity: tuple[NurseActivity, ...] = ()
    witness_pairs: tuple[WitnessPair, ...] = ()
    # The window's wastes whose witness's phone said when it confirmed them.
    attestations: tuple[WitnessAttestation, ...] = ()
    clocks: tuple[DeviceClock, ...] = ()
    refusals: tuple[CustodyRefusal, ...] = ()
    # A visit is one occasion for the hours rules, dated by its first event: the scan's loader
    # gives that one alone, marked with a reason if any of the visit's check-ins had one.
    work_events: tuple[WorkEvent, ...] = ()
    weighings: tuple[Weighing, ...] = ()
    readings: tuple[SessionReadings, ...] = ()
    # The pharmacy's movements, and the start of the window they cover in full: None when they
    # are only a write's own (a total or a peer figure needs the whole window).
    vault_movements: tuple[VaultMovement, ...] = ()
    vault_since: datetime | None = None
    # Each plan version's own threshold overrides, layered on the organisation's policy.
    plan_overrides: Mapping[str, Mapping[str, object]] = field(
        default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        object.__setattr__(self, "plan_overrides", _frozen(self.plan_overrides))

    def policy_for(self, policy: Policy, plan_version_id: str | None) -> Policy:
        """Return `policy` with the plan version's overrides on top, if it has any."""
        overrides = self.plan_overrides.get(plan_version_id or "")
        return policy.with_overrides(overrides) if overrides else policy

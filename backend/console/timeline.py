"""A flag's evidence as a timeline: the subject's visits, doses, readings and custody around it.

Everything is read through the features' own readers: the scanner's loaders (the facts the
rules judged: visits, check-ins, doses against the plan), the session records the API shows
(audited as `session.read`, one row per visit, as the API writes them) and the custody
ledger's entries. The window is a week either side of the finding, and bounded twice more so
that a busy nurse's fortnight stays one page: the visits nearest the finding, and a page of
ledger entries per holder.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy.orm import Session

from backend.accounts.models import User
from backend.administration import service as administration
from backend.administration.models import Discharge, Observation, PreDose
from backend.administration.service import SessionRecord
from backend.auth.caller import Caller
from backend.console.pages import when
from backend.custody import service as custody
from backend.custody.ledger import bag
from backend.custody.models import CustodyEntry, Kind
from backend.flags.models import Flag, FlagAction
from backend.runtime import Runtime
from backend.scan import loaders
from safeguards import facts as f
from safeguards.findings import SubjectKind

WINDOW = timedelta(days=7)
# A week either side of a busy nurse holds some forty visits; the nearest say the most, and
# each shown costs its session's records (decrypted, audited): the page says how many are left.
MOST_VISITS = 12
MOST_ENTRIES = 200
HOLDERS = {"vault": "the vault", "supplier": "the supplier", "waste": "waste",
           "destruction": "destruction", "loss": "loss", "count": "a count correction"}


@dataclass(frozen=True)
class Reading:
    """One set of vital signs in a visit's monitoring."""

    label: str
    at: datetime
    blood_pressure: str
    heart_rate: int | None
    spo2: int | None
    respiratory_rate: int | None
    moaas: int | None
    cadss_total: int | None


@dataclass(frozen=True)
class Moment:
    """One event on the timeline, said in words; `finding` marks what the rule found."""

    at: datetime
    heading: str
    sentence: str
    readings: tuple[Reading, ...] = ()
    finding: bool = False


@dataclass(frozen=True)
class Timeline:
    """The events around a finding, oldest first, and the window they were read from."""

    since: datetime
    until: datetime
    about: str
    moments: list[Moment]
    visits_shown: int = 0
    visits_left_out: int = 0


def by_thousand(value: int | Decimal) -> str:
    """Return `value` over a thousand, exactly and without trailing zeros: µg as mg, g as kg."""
    return format((Decimal(value) / 1000).normalize(), "f")


def of_flag(session: Session, rt: Runtime, caller: Caller, flag: Flag,
            people: Mapping[uuid.UUID, User]) -> Timeline:
    """Return the flag's findings among its subject's events, a week either side."""
    since, until = flag.first_seen_at - WINDOW, flag.first_seen_at + WINDOW
    moments = list(_findings(flag))
    visit_ids: set[str] = set()
    shown = left_out = 0
    if flag.patient_id or flag.nurse_id:
        # A patient's events are few and all hers; a nurse's, when the finding names no patient.
        facts = loaders.window(session, loaders.Scope(
            caller.organisation_id, until, since, patient_id=flag.patient_id,
            nurse_id=None if flag.patient_id else flag.nurse_id))
        visits = _nearest(list(facts.visits), flag.first_seen_at)
        shown, left_out = len(visits), len(facts.visits) - len(visits)
        visit_ids = {visit.id for visit in visits}
        records = administration.view_sessions(session, rt, caller,
                                               [uuid.UUID(visit.id) for visit in visits])
        moments += _visits(visits, facts.evv, people)
        moments += _sessions(records, {dose.id: dose for dose in facts.doses})
    entries = _entries(session, caller, flag, since, until, visit_ids)
    moments += (_movement(entry, people, flag.patient_id) for entry in entries)
    return Timeline(since, until, _about(flag, people),
                    sorted(moments, key=lambda moment: moment.at), shown, left_out)


def _about(flag: Flag, people: Mapping[uuid.UUID, User]) -> str:
    if flag.patient_id:
        return "the patient"
    if flag.nurse_id:
        return _name(people, flag.nurse_id)
    lot = _lot(flag)
    return f"lot {lot}" if lot else "the finding alone"


def _nearest(visits: list[f.Visit], moment: datetime) -> list[f.Visit]:
    return sorted(visits, key=lambda visit: abs(visit.scheduled_start - moment))[:MOST_VISITS]


def _findings(flag: Flag) -> Iterator[Moment]:
    for event in flag.events:
        if event.action == FlagAction.RAISED:
            yield Moment(event.at, "Finding", event.detail.get("summary", ""), finding=True)
        elif event.action == FlagAction.RE_RAISED:
            found = event.detail.get("finding", {})
            yield Moment(event.at, "Found again", found.get("summary", ""), finding=True)


def _name(people: Mapping[uuid.UUID, User], user_id: uuid.UUID | str | None) -> str:
    if user_id is None:
        return "nobody"
    user = people.get(uuid.UUID(str(user_id)))
    return user.display_name if user else "a user of another organisation"


def _visits(visits: list[f.Visit], checks: Iterable[f.EvvEvent],
            people: Mapping[uuid.UUID, User]) -> Iterator[Moment]:
    shown = {visit.id for visit in visits}
    for visit in visits:
        said = (f"Scheduled {when(visit.scheduled_start)} to {when(visit.scheduled_end)} with "
                f"{_name(people, visit.nurse_id)}: {visit.status.replace('_', ' ')}")
        if visit.override:
            said += (f"; booked past a frequency limit by {_name(people, visit.override_by_id)}"
                     f" (reason: {visit.override_reason or 'none given'})")
        if visit.status_reason:
            said += f"; reason: {visit.status_reason}"
        yield Moment(visit.scheduled_start, "Visit", said + ".")
    for check in checks:
        if check.visit_id in shown:
            yield Moment(check.occurred_at, check.kind.replace("_", "-").capitalize(),
                         _presence(check, people))


def _presence(check: f.EvvEvent, people: Mapping[uuid.UUID, User]) -> str:
    where = (f"{check.distance_m} m from the patient's home (radius {check.radius_m} m, "
             f"GPS accuracy ±{check.accuracy_m} m)" if check.distance_m is not None
             else "where the patient's home is not recorded")
    said = f"By {_name(people, check.nurse_id)}, {where}"
    return said + (f"; reason given: {check.reason}." if check.reason else ".")


def _sessions(records: Mapping[uuid.UUID, SessionRecord],
              doses: Mapping[str, f.Dose]) -> Iterator[Moment]:
    for record in records.values():
        if record.dose is not None:
            yield Moment(record.dose.infusion_started_at, "Dose",
                         _dose(record, doses.get(str(record.dose.id))))
        readings = tuple(_readings(record))
        if readings:
            yield Moment(readings[0].at, "Monitoring", _monitoring(record), readings)
        for held in record.quarantined:
            yield Moment(datetime.fromisoformat(held["received_at"]), "Quarantined",
                         f"A {held['record_type'].replace('_', ' ')} record from the phone was "
                         f"kept aside: {held['reason']}")


def _dose(record: SessionRecord, judged: f.Dose | None) -> str:
    dose = record.dose
    said = (f"{by_thousand(dose.quantity_ug)} mg ({dose.quantity_ug} µg) {dose.route} of lot "
            f"{dose.lot}, over {when(dose.infusion_started_at)} to "
            f"{when(dose.infusion_ended_at)}")
    if dose.ug_per_kg is not None and dose.weight_g:
        said += (f"; {by_thousand(dose.ug_per_kg)} mg/kg at {by_thousand(dose.weight_g)} kg")
    else:
        said += "; no weight recorded, so no mg/kg"
    if judged is not None and judged.planned_ug:
        said += f"; the plan: {by_thousand(judged.planned_ug)} mg"
    if judged is not None and judged.plan_max_ug:
        said += f", at most {by_thousand(judged.plan_max_ug)} mg"
    return said + "."


def _readings(record: SessionRecord) -> Iterator[Reading]:
    start = record.dose.infusion_started_at if record.dose else None
    if record.pre_dose:
        yield _reading("Pre-dose", record.pre_dose)
    for observed in record.observations:
        label = (f"{(observed.occurred_at - start) // timedelta(minutes=1)} min after the dose"
                 if start else "Observation")
        yield _reading(label, observed)
    if record.discharge:
        yield _reading("Discharge", record.discharge)


def _reading(label: str, row: PreDose | Observation | Discharge) -> Reading:
    pressure = ("—" if row.systolic is None and row.diastolic is None
                else f"{_shown(row.systolic)}/{_shown(row.diastolic)}")
    return Reading(label, row.occurred_at, pressure, row.heart_rate, row.spo2,
                   row.respiratory_rate, row.moaas, row.cadss_total)


def _shown(value: int | None) -> str:
    return "—" if value is None else str(value)


def _monitoring(record: SessionRecord) -> str:
    said = []
    if record.pre_dose:
        said.append(f"pre-dose decision: {record.pre_dose.decision.replace('_', ' ')}")
        if record.pre_dose.bp_justification:
            said.append(f"blood pressure justified as: {record.pre_dose.bp_justification}")
    said.append(f"{len(record.observations)} observation(s) after the dose")
    if record.discharge:
        said.append(f"discharged {record.discharge.state.replace('_', ' ')}, adverse events: "
                    f"{record.discharge.adverse_event_category.replace('_', ' ')}")
    said += [f"{score.instrument.upper()} {score.total}" for score in record.outcomes]
    return "; ".join(said).capitalize() + "."


def _lot(flag: Flag) -> str | None:
    if flag.subject_kind == SubjectKind.LOT:
        return flag.subject_id
    lot = flag.evidence.get("lot")
    return lot if isinstance(lot, str) else None


def _entries(session: Session, caller: Caller, flag: Flag, since: datetime, until: datetime,
             visit_ids: set[str]) -> list[CustodyEntry]:
    """Return the ledger entries of the finding's bag, patient, and counted lot in the window."""
    def page(holder: str | None, lot: str | None = None) -> list[CustodyEntry]:
        return custody.entries(session, caller, custody.EntryFilter(
            holder=holder, lot=lot, since=since, until=until, limit=MOST_ENTRIES))

    found: dict[uuid.UUID, CustodyEntry] = {}
    if flag.nurse_id:
        for entry in page(bag(flag.nurse_id)):
            # Beside one patient, her bag's movements at other patients' visits are noise.
            if not (flag.patient_id and entry.visit_id and str(entry.visit_id) not in visit_ids):
                found[entry.id] = entry
    if flag.patient_id:
        found |= {entry.id: entry for entry in page(f"patient:{flag.patient_id}")}
    holder, lot = flag.evidence.get("holder"), _lot(flag)
    if lot or isinstance(holder, str):
        found |= {entry.id: entry for entry in page(
            holder if isinstance(holder, str) else None, lot)}
    return sorted(found.values(), key=lambda entry: entry.seq)


def _holder(holder: str, people: Mapping[uuid.UUID, User], patient_id: uuid.UUID | None) -> str:
    kind, _, owner = holder.partition(":")
    if kind == "bag":
        return f"the bag of {_name(people, owner)}"
    if kind == "patient":
        return "the patient" if owner == str(patient_id) else "another patient"
    return HOLDERS.get(holder, holder)


def _witness(confirmed: Mapping[str, str], people: Mapping[uuid.UUID, User],
             occurred_at: datetime) -> str:
    """Return a witness's name and, when her phone timed it, when she confirmed."""
    name = _name(people, confirmed["user_id"])
    if not confirmed.get("attested_at"):
        return name
    after = (datetime.fromisoformat(confirmed["attested_at"]) - occurred_at) // timedelta(
        minutes=1)
    return f"{name}, whose phone confirmed {abs(after)} min {'after' if after >= 0 else 'before'}"


def _movement(entry: CustodyEntry, people: Mapping[uuid.UUID, User],
              patient_id: uuid.UUID | None) -> Moment:
    said = (f"{entry.kind.capitalize()} of {by_thousand(entry.quantity_ug)} mg "
            f"({entry.quantity_ug} µg) of lot {entry.lot} from "
            f"{_holder(entry.from_holder, people, patient_id)} to "
            f"{_holder(entry.to_holder, people, patient_id)}, by {_name(people, entry.actor_id)}")
    witnesses = [_witness(confirmed, people, entry.occurred_at)
                 for confirmed in entry.confirmations or ()]
    if witnesses:
        said += f"; witnessed by {', '.join(witnesses)}"
    elif entry.kind in (Kind.WASTE, Kind.DESTROY):
        said += "; no witness"
    return Moment(entry.occurred_at, f"Ledger #{entry.seq}", said + ".")

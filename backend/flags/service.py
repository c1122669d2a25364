"""Store safeguard findings as flags, one per dedup key, and carry them through review."""

# A flag goes open → in_review (when assigned) → resolved (with a verdict and a note). Every
# step is a `FlagEvent` in the flag's append-only history, each reviewer's step is audited, and
# nothing is deleted.

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from backend.accounts.models import Role, User
from backend.audit import service as audit
from backend.auth.caller import Caller
from backend.errors import Conflict, InvalidField
from backend.flags.models import (
    Flag,
    FlagAction,
    FlagEvent,
    FlagOccurrence,
    FlagStatus,
    Resolution,
)
from backend.metrics import committed
from backend.metrics.registry import FLAGS_RAISED
from backend.mfa.policy import Action, require_fresh
from backend.patients.models import Patient
from backend.policy.service import policy_for
from backend.runtime import Runtime
from backend.tenancy import of_organisation, owned
from backend.visits.models import Visit
from safeguards.findings import ESCALATION_STEPS, Finding, Severity, SubjectKind, escalated

REVIEWERS = (Role.COMPLIANCE, Role.ADMIN)
# The verdicts that dismiss a flag: on a critical one they need a fresh second factor, so a
# password alone cannot close what may point at diversion. Confirming a flag needs none.
DISMISSALS = (Resolution.JUSTIFIED, Resolution.FALSE_POSITIVE)
# Sort by rank: alphabetically "critical" < "high" < "info" < "low" < "medium" means nothing.
# An occurrence key longer than this is stored as its SHA-256 digest.
OCCURRENCE_KEY_LENGTH = 64
SEVERITY_RANK = case({severity.value: severity.rank for severity in Severity},
                     value=Flag.severity, else_=-1)


class IllegalTransition(Conflict):
    """The flag's status does not allow this step."""

    code = "illegal_transition"

    def __init__(self, flag: Flag, action: str, allowed: tuple[FlagStatus, ...]) -> None:
        super().__init__(
            f"A {flag.status} flag cannot be {action}; it must be "
            f"{' or '.join(allowed)}.",
            {"status": flag.status, "action": action, "allowed_from": list(allowed)})


def _json_evidence(finding: Finding) -> dict:
    # Decimals travel as strings so that no amount is rounded through a float.
    return {k: str(v) if isinstance(v, Decimal) else v for k, v in finding.evidence.items()}


def _snapshot(flag: Flag) -> dict[str, Any]:
    return {"rule_version": flag.rule_version, "severity": flag.severity,
            "summary": flag.summary, "evidence": flag.evidence, "shadow": flag.shadow}


def _finding_snapshot(finding: Finding) -> dict[str, Any]:
    return {"rule_version": finding.rule_version, "severity": finding.severity.value,
            "summary": finding.summary, "evidence": _json_evidence(finding),
            "shadow": finding.shadow}


def _record(flag: Flag, now: datetime, actor_id: uuid.UUID | None, action: FlagAction, *,
            moved: tuple[str | None, str] | None = None, note: str | None = None,
            detail: dict[str, Any] | None = None) -> FlagEvent:
    """Append one event to `flag`'s history; `moved` is the status change it made, if any."""
    from_status, to_status = moved or (None, None)
    event = FlagEvent(seq=len(flag.events) + 1, organisation_id=flag.organisation_id, at=now,
                      actor_id=actor_id, action=action, from_status=from_status,
                      to_status=to_status, note=note, detail=detail or {})
    flag.events.append(event)
    flag.updated_at = now
    return event


def _uuid(value: object) -> uuid.UUID | None:
    try:
        return None if value is None else uuid.UUID(str(value))
    except ValueError:
        return None


def _people(session: Session, organisation_id: uuid.UUID,
            finding: Finding) -> tuple[uuid.UUID | None, uuid.UUID | None]:
    """Return the nurse and patient `finding` concerns, when it names ones of this organisation."""
    subject, evidence = finding.subject, finding.evidence
    nurse_id = _uuid(subject.id if subject.kind is SubjectKind.NURSE
                     else evidence.get("nurse_id"))
    patient_id = _uuid(subject.id if subject.kind is SubjectKind.PATIENT
                       else evidence.get("patient_id"))
    if subject.kind is SubjectKind.VISIT and not (nurse_id and patient_id):
        # Most findings are about a visit: its nurse and patient are whom reviewers look for.
        visit = of_organisation(session, Visit, _uuid(subject.id), organisation_id)
        if visit is not None:
            nurse_id, patient_id = nurse_id or visit.nurse_id, patient_id or visit.patient_id
    # A wrong id in evidence must not stop the flag from being raised; it just names nobody.
    nurse = of_organisation(session, User, nurse_id, organisation_id)
    patient = of_organisation(session, Patient, patient_id, organisation_id)
    return (nurse.id if nurse else None, patient.id if patient else None)


def _occurrence_key(finding: Finding) -> str:
    key = finding.occurrence_key
    # An event's own id reads best; a composite longer than the column is kept as its digest.
    return key if len(key) <= OCCURRENCE_KEY_LENGTH else hashlib.sha256(key.encode()).hexdigest()


def escalation_steps(session: Session, organisation_id: uuid.UUID) -> tuple[int, ...]:
    """Return the organisation's occurrence counts at which a case's severity steps up."""
    policy = policy_for(session, organisation_id)
    return tuple(int(policy.value(name)) for name in ESCALATION_STEPS)


def _as_escalated(finding: Finding, occurrences: int, steps: tuple[int, ...]) -> Finding:
    """Return `finding` at the severity its case's count of distinct occurrences reached."""
    severity = escalated(finding.severity, occurrences, steps)
    if severity == finding.severity:
        return finding
    return replace(finding, severity=severity, summary=(
        f"{finding.summary} Repeated: {occurrences} distinct occurrences of this case, so it "
        f"rises from {finding.severity} to {severity}; check the case's history for the "
        "pattern."))


def raise_flag(session: Session, now: datetime, organisation_id: uuid.UUID,
               finding: Finding, steps: tuple[int, ...] | None = None) -> Flag:
    """Store `finding` in its case's flag; a known occurrence re-raises it, a new one counts."""
    return _raise(session, now, organisation_id, finding, steps)[0]


def _raise(session: Session, now: datetime, organisation_id: uuid.UUID, finding: Finding,
           steps: tuple[int, ...] | None) -> tuple[Flag, bool]:
    steps = escalation_steps(session, organisation_id) if steps is None else steps
    flag = session.scalar(select(Flag).where(
        Flag.organisation_id == organisation_id, Flag.dedup_key == finding.dedup_key)
        .with_for_update().execution_options(populate_existing=True))
    key = _occurrence_key(finding)
    if flag is None:
        return _first_raise(session, now, organisation_id, finding, key), True
    flag.last_seen_at = now
    seen = session.scalar(select(FlagOccurrence).where(
        FlagOccurrence.flag_id == flag.id, FlagOccurrence.occurrence_key == key))
    if seen is None:
        flag.occurrences += 1
        _count(session, flag, key, finding, now)
    elif key != flag.occurrence_key and finding.severity <= Severity(seen.severity):
        # An earlier event of the case found again (every night re-checks the window): it is
        # counted, and the flag shows a later one.
        session.flush()
        return flag, False
    elif finding.severity > Severity(seen.severity):
        seen.severity = finding.severity.value
    finding = _as_escalated(finding, flag.occurrences, steps)
    if key != flag.occurrence_key and finding.severity < Severity(flag.severity):
        # A milder occurrence does not make an open case less urgent than its worst one.
        finding = replace(finding, severity=Severity(flag.severity))
    _update(session, now, organisation_id, flag, finding, key, counted=seen is None)
    return flag, False


def _update(session: Session, now: datetime, organisation_id: uuid.UUID, flag: Flag,
            finding: Finding, key: str, *, counted: bool) -> None:
    # A verdict answers the finding it was given on: the same thing found again stays resolved,
    # beside that finding, and the history keeps the new one. Found worse (by a worse event, or
    # by repetition), it is a new question: the flag reopens, unassigned for a fresh look, and
    # the set-aside verdict stays in history.
    reopen = (flag.status == FlagStatus.RESOLVED
              and finding.severity > Severity(flag.severity))
    found = _finding_snapshot(finding)
    latest = flag.events[-1] if flag.events else None
    last_found = latest.detail.get("finding") if latest is not None and \
        latest.action == FlagAction.RE_RAISED else None
    if not counted and found in (_snapshot(flag), last_found) and not reopen:
        # Found again just as it stands (every write and every night re-checks): the time says
        # so; the history records changes and new occurrences, not repetitions.
        session.flush()
        return
    _record(flag, now, None, FlagAction.RE_RAISED, detail={
        "previous": _snapshot(flag), "finding": found, "occurrence": flag.occurrences,
        "occurrence_key": key, "new_occurrence": counted})
    if flag.status != FlagStatus.RESOLVED or reopen:
        _take(session, flag, organisation_id, finding)
        flag.occurrence_key = key
    if reopen:
        _reopen(session, now, flag)
    session.flush()


def _count(session: Session, flag: Flag, key: str, finding: Finding, now: datetime) -> None:
    session.add(FlagOccurrence(flag_id=flag.id, organisation_id=flag.organisation_id,
                               occurrence_key=key, severity=finding.severity.value,
                               first_seen_at=now))


@dataclass(frozen=True)
class Raised:
    """A finding and the flag that now holds it; `new` when the flag was first raised by it."""

    finding: Finding
    flag: Flag
    new: bool


def _cases(findings: Collection[Finding]) -> dict[str, list[Finding]]:
    """Return the findings by case, each occurrence once (its most severe finding), in order."""
    cases: dict[str, dict[str, Finding]] = {}
    for finding in findings:
        occurrences = cases.setdefault(finding.dedup_key, {})
        held = occurrences.get(finding.occurrence_key)
        if held is None or finding.severity > held.severity:
            occurrences[finding.occurrence_key] = finding
    return {key: list(occurrences.values()) for key, occurrences in cases.items()}


def raise_flags(session: Session, now: datetime, organisation_id: uuid.UUID,
                findings: Collection[Finding], *, recurring: bool = False) -> list[Raised]:
    """Store each case's findings in its flag; a recurring one already flagged waits as it is."""
    cases = _cases(findings)
    known: set[str] = set()
    if recurring and cases:
        # A job finds the same overdue thing every run: once flagged, it waits for its reviewer.
        known = set(session.scalars(select(Flag.dedup_key).where(
            Flag.organisation_id == organisation_id, Flag.dedup_key.in_(list(cases)))))
    steps = escalation_steps(session, organisation_id) if cases else ()
    raised = []
    for dedup, occurrences in cases.items():
        if dedup in known:
            continue
        new = False
        for finding in occurrences:
            flag, created = _raise(session, now, organisation_id, finding, steps)
            new = new or created
        raised.append(Raised(finding, flag, new))
        if recurring:
            audit.record(session, now, None, finding.rule_id, "flag", flag.id,
                         organisation_id=organisation_id,
                         detail={"subject": f"{finding.subject.kind}:{finding.subject.id}"})
    return raised


def _first_raise(session: Session, now: datetime, organisation_id: uuid.UUID,
                 finding: Finding, key: str) -> Flag:
    flag = Flag(organisation_id=organisation_id, dedup_key=finding.dedup_key,
                status=FlagStatus.OPEN, occurrences=1, occurrence_key=key, first_seen_at=now,
                last_seen_at=now, updated_at=now)
    _take(session, flag, organisation_id, finding)
    session.add(flag)
    _record(flag, now, None, FlagAction.RAISED, moved=(None, FlagStatus.OPEN),
            detail={**_finding_snapshot(finding), "occurrence_key": key})
    session.flush()
    _count(session, flag, key, finding, now)
    session.flush()
    committed.count(session, FLAGS_RAISED, rule=finding.rule_id, severity=finding.severity.value)
    return flag


def _take(session: Session, flag: Flag, organisation_id: uuid.UUID, finding: Finding) -> None:
    flag.rule_id, flag.rule_version = finding.rule_id, finding.rule_version
    flag.severity, flag.shadow = finding.severity.value, finding.shadow
    flag.subject_kind, flag.subject_id = finding.subject.kind.value, finding.subject.id
    flag.summary, flag.evidence = finding.summary, _json_evidence(finding)
    flag.nurse_id, flag.patient_id = _people(session, organisation_id, finding)


def _reopen(session: Session, now: datetime, flag: Flag) -> None:
    verdict = {"resolution": flag.resolution, "resolved_by_id": str(flag.resolved_by_id),
               "resolved_at": flag.resolved_at.isoformat() if flag.resolved_at else None,
               "assignee_id": str(flag.assignee_id) if flag.assignee_id else None}
    flag.status, flag.assignee_id = FlagStatus.OPEN, None
    flag.resolution = flag.resolved_at = flag.resolved_by_id = None
    _record(flag, now, None, FlagAction.REOPENED, moved=(FlagStatus.RESOLVED, FlagStatus.OPEN),
            detail={"reason": "severity_increased", "severity": flag.severity, **verdict})
    audit.record(session, now, None, "flag.reopen", "flag", flag.id,
                 organisation_id=flag.organisation_id, detail=verdict)


@dataclass(frozen=True)
class FlagFilter:
    """The filters a reviewer may combine on the queue; unset ones match everything."""

    status: Collection[str] = ()
    severity: Collection[str] = ()
    rule: str | None = None
    nurse: uuid.UUID | None = None
    patient: uuid.UUID | None = None
    assignee: uuid.UUID | None = None
    subject_kind: str | None = None
    subject_id: str | None = None
    # The live queue leaves out shadow flags, which judge a rule before it reaches reviewers.
    shadow: bool | None = False
    limit: int = 100
    offset: int = 0


def _matching(caller: Caller, where: FlagFilter) -> list[Any]:
    """Return the conditions of the organisation's flags that `where` selects."""
    conditions = [Flag.organisation_id == caller.organisation_id]
    if where.status:
        conditions.append(Flag.status.in_(where.status))
    if where.severity:
        conditions.append(Flag.severity.in_(where.severity))
    for column, value in ((Flag.rule_id, where.rule), (Flag.nurse_id, where.nurse),
                          (Flag.patient_id, where.patient), (Flag.assignee_id, where.assignee),
                          (Flag.subject_kind, where.subject_kind),
                          (Flag.subject_id, where.subject_id), (Flag.shadow, where.shadow)):
        if value is not None:
            conditions.append(column == value)
    return conditions


def listing(session: Session, caller: Caller, where: FlagFilter) -> list[Flag]:
    """Return the organisation's flags matching `where`: most severe first, then oldest."""
    query = select(Flag).where(*_matching(caller, where))
    query = query.order_by(SEVERITY_RANK.desc(), Flag.first_seen_at, Flag.id)
    return list(session.scalars(query.limit(where.limit).offset(where.offset)))


def severity_counts(session: Session, caller: Caller, where: FlagFilter) -> dict[str, int]:
    """Count every flag `where` selects, paging aside, by severity (each one, zero included)."""
    counted = {severity: count for severity, count in session.execute(
        select(Flag.severity, func.count()).where(*_matching(caller, where))
        .group_by(Flag.severity))}
    return {severity.value: counted.get(severity.value, 0) for severity in reversed(Severity)}


def get(session: Session, caller: Caller, flag_id: uuid.UUID, *, lock: bool = False) -> Flag:
    """Return the caller's organisation's flag (row-locked when `lock`), or raise NotFound."""
    return owned(session, caller, Flag, flag_id, what="flag", for_update=lock)


def read(session: Session, rt: Runtime, caller: Caller, flag_id: uuid.UUID) -> Flag:
    """Return a flag for a reviewer to read, auditing the read: its evidence quotes PHI."""
    flag = get(session, caller, flag_id)
    audit.record(session, rt.clock.now(), caller, "flag.read", "flag", flag.id)
    return flag


def _require(flag: Flag, action: str, *allowed: FlagStatus) -> None:
    if flag.status not in allowed:
        raise IllegalTransition(flag, action, allowed)


def assign(session: Session, rt: Runtime, caller: Caller, flag_id: uuid.UUID,
           assignee_id: uuid.UUID) -> Flag:
    """Give an unresolved flag to a reviewer; an open flag goes into review."""
    flag = get(session, caller, flag_id, lock=True)
    _require(flag, "assigned", FlagStatus.OPEN, FlagStatus.IN_REVIEW)
    assignee = of_organisation(session, User, assignee_id, caller.organisation_id)
    if assignee is None or not assignee.active or assignee.role not in REVIEWERS:
        raise InvalidField("assignee_id",
                           "not an active compliance or admin user of this organisation")
    now = rt.clock.now()
    handover = {"from": str(flag.assignee_id) if flag.assignee_id else None,
                "to": str(assignee.id)}
    flag.assignee_id = assignee.id
    _record(flag, now, caller.user_id, FlagAction.ASSIGNED, detail=handover)
    if flag.status == FlagStatus.OPEN:
        flag.status = FlagStatus.IN_REVIEW
        _record(flag, now, caller.user_id, FlagAction.STATUS_CHANGED,
                moved=(FlagStatus.OPEN, FlagStatus.IN_REVIEW))
    session.flush()
    audit.record(session, now, caller, "flag.assign", "flag", flag.id,
                 detail={**handover, "status": flag.status})
    return flag


def _written(note: str) -> str:
    if not note.strip():
        raise InvalidField("note", "write what was found; a blank note is not a note")
    return note.strip()


def add_note(session: Session, rt: Runtime, caller: Caller, flag_id: uuid.UUID,
             note: str) -> Flag:
    """Add a reviewer's note to a flag's history, whatever its status."""
    flag = get(session, caller, flag_id, lock=True)
    text = _written(note)
    now = rt.clock.now()
    event = _record(flag, now, caller.user_id, FlagAction.NOTE, note=text)
    session.flush()
    # The note itself stays in the flag's history; the audit trail says that one was written.
    audit.record(session, now, caller, "flag.note", "flag", flag.id, detail={"seq": event.seq})
    return flag


def resolve(session: Session, rt: Runtime, caller: Caller, flag_id: uuid.UUID,
            resolution: Resolution, note: str) -> Flag:
    """Close a flag under review with the reviewer's verdict and the note that explains it."""
    flag = get(session, caller, flag_id, lock=True)
    _require(flag, "resolved", FlagStatus.IN_REVIEW)
    if flag.severity == Severity.CRITICAL and resolution in DISMISSALS:
        require_fresh(session, rt, caller, Action.CRITICAL_VERDICT)
    text = _written(note)
    now = rt.clock.now()
    flag.status, flag.resolution = FlagStatus.RESOLVED, Resolution(resolution).value
    flag.resolved_at, flag.resolved_by_id = now, caller.user_id
    _record(flag, now, caller.user_id, FlagAction.RESOLVED,
            moved=(FlagStatus.IN_REVIEW, FlagStatus.RESOLVED), note=text,
            detail={"resolution": flag.resolution})
    session.flush()
    audit.record(session, now, caller, "flag.resolve", "flag", flag.id,
                 detail={"resolution": flag.resolution})
    return flag

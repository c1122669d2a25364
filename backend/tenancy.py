"""One tenant lookup: an object of the caller's organisation, as far as her role lets her see it.

Another organisation's object answers exactly as a missing one does (404), so ids reveal
nothing across organisations. Within the organisation a nurse sees less than the other roles:
only what `nurse_sees` allows — her own visits, devices and bag, the patients she is assigned.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from backend.accounts.models import Role
from backend.auth.caller import Caller
from backend.errors import NotFound
from backend.patients.models import PatientNurse

T = TypeVar("T")
# Whether a nurse caller may see an object her organisation holds.
NurseRule = Callable[[Session, Caller, Any], bool]


def of_organisation(session: Session, model: type[T], object_id: uuid.UUID | None,
                    organisation_id: uuid.UUID, *, for_update: bool = False) -> T | None:
    """Return the organisation's object with this id, or None (no id, missing, another's)."""
    if object_id is None:
        return None
    # A lock reads the row again, so the caller decides on what is committed, not on a copy.
    found = session.get(model, object_id, with_for_update=for_update,
                        populate_existing=for_update)
    return found if found is not None and found.organisation_id == organisation_id else None


def owned(session: Session, caller: Caller, model: type[T], object_id: uuid.UUID, *, what: str,
          for_update: bool = False, nurse_sees: NurseRule | None = None) -> T:
    """Return the organisation's object the caller may see (see `nurse_sees`), or raise NotFound."""
    found = of_organisation(session, model, object_id, caller.organisation_id,
                            for_update=for_update)
    if found is None or (caller.role == Role.NURSE and nurse_sees is not None
                         and not nurse_sees(session, caller, found)):
        raise NotFound(f"No such {what}.")
    return found


def hers(field: str) -> NurseRule:
    """Return the rule: a nurse sees an object whose `field` holds her own user id."""
    return lambda session, caller, found: getattr(found, field) == caller.user_id


def assigned_patient_ids(nurse_id: uuid.UUID) -> Select[tuple[uuid.UUID]]:
    """Return the query of the patients the nurse is assigned to now."""
    return select(PatientNurse.patient_id).where(PatientNurse.nurse_id == nurse_id,
                                                 PatientNurse.ended_at.is_(None))


def is_assigned(session: Session, nurse_id: uuid.UUID, patient_id: uuid.UUID) -> bool:
    """Tell whether the nurse is assigned to the patient now."""
    return session.scalar(assigned_patient_ids(nurse_id).where(
        PatientNurse.patient_id == patient_id).limit(1)) is not None


def assigned(field: str) -> NurseRule:
    """Return the rule: a nurse sees an object of a patient (its `field`) she is assigned to."""
    return lambda session, caller, found: is_assigned(session, caller.user_id,
                                                      getattr(found, field))

"""Seed a demonstration organisation: one user of each role and two fictitious patients."""

from __future__ import annotations

import json
import os
import secrets
from datetime import date
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.accounts import service as accounts
from backend.accounts.models import Organisation, Role, User
from backend.auth.caller import Caller
from backend.patients import service as patients
from backend.runtime import Runtime

DEMO_SLUG = "demo"
LOGINS_FILE = "demo-logins.json"
# Fictitious registration with a valid check digit; real numbers never appear in the repo.
DEMO_DEA = "FV0000000"
DEMO_PATIENTS = (("DEMO-0001", "Alex Example", date(1980, 4, 12)),
                 ("DEMO-0002", "Sam Placeholder", date(1991, 9, 3)))


def _passwords(instance: Path) -> dict[str, str]:
    path = instance / LOGINS_FILE
    if path.exists():
        return json.loads(path.read_text())
    logins = {role.value: secrets.token_urlsafe(12) for role in Role}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(logins, handle, indent=2)
    return logins


def seed(session: Session, rt: Runtime, instance: Path) -> dict[str, str]:
    """Create the demo organisation once; return each role's username → password."""
    passwords = _passwords(instance)
    org = session.scalar(select(Organisation).where(Organisation.slug == DEMO_SLUG))
    if org is None:
        org = accounts.create_organisation(session, rt, slug=DEMO_SLUG,
                                           name="Demo Home Infusion Pharmacy",
                                           dea_registration=DEMO_DEA,
                                           timezone="America/New_York")
    users = {}
    for role in Role:
        username = f"demo-{role.value}"
        user = session.scalar(select(User).where(User.organisation_id == org.id,
                                                 User.username == username))
        users[role] = user or accounts.create_user(
            session, rt, None, organisation_id=org.id, username=username,
            display_name=f"Demo {role.value.title()}", role=role,
            password=passwords[role.value])
    _seed_patients(session, rt, users)
    return {f"demo-{role}": password for role, password in passwords.items()}


def _seed_patients(session: Session, rt: Runtime, users: dict[Role, User]) -> None:
    admin = users[Role.ADMIN]
    caller = Caller(user_id=admin.id, organisation_id=admin.organisation_id, role=Role.ADMIN,
                    family_id=None, device_id=None, address=None)
    if patients.search(session, rt, caller, DEMO_PATIENTS[0][0]):
        return
    for mrn, name, born in DEMO_PATIENTS:
        patients.register(session, rt, caller, mrn=mrn, name=name, date_of_birth=born,
                          nurse_ids=[users[Role.NURSE].id], patient_id=None)

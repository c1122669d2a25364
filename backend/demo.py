"""Seed a demonstration organisation: users, fictitious patients, products, plans and visits."""

from __future__ import annotations

import json
import os
import secrets
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.accounts import service as accounts
from backend.accounts.models import Organisation, Role, User
from backend.auth.caller import Caller, FactorUse
from backend.patients import service as patients
from backend.plans import service as plans
from backend.policy.service import policy_for
from backend.products import service as products
from backend.runtime import Runtime
from backend.visits import service as visits

DEMO_SLUG = "demo"
LOGINS_FILE = "demo-logins.json"
# Fictitious registration with a valid check digit; real numbers never appear in the repo.
DEMO_DEA = "FV0000000"
# Fictitious people at public landmarks in Manhattan; no real patient data.
DEMO_PATIENTS = (
    ("DEMO-0001", "Alex Example", date(1980, 4, 12), "female", "11 W 53rd St, New York, NY",
     "+1 212 555 0101", Decimal("40.761400"), Decimal("-73.977600")),
    ("DEMO-0002", "Sam Placeholder", date(1991, 9, 3), "male",
     "200 Central Park W, New York, NY", "+1 212 555 0102", Decimal("40.781300"),
     Decimal("-73.974000")),
)
DEMO_ADDRESS = ("100 Example Avenue, Suite 2", "Springfield", "NY", "12345")
# The NDCs are fictional (labeler 12345); 6130 is RxNorm's concept for ketamine itself.
DEMO_PRODUCTS = (
    {"name": "Ketamine HCl 50 mg/mL, 10 mL vial", "active_ingredient": "ketamine",
     "dea_schedule": "III", "form": "vial", "ug_per_unit": 50_000,
     "units_per_container": Decimal(10), "allowed_routes": ["IV", "IM"],
     "home_administration_allowed": True, "ndc": "12345-0001-10",
     "package_description": "10 mL multi-dose vial", "rxnorm_code": "6130"},
    {"name": "Ketamine HCl 10 mg/mL, 20 mL vial", "active_ingredient": "ketamine",
     "dea_schedule": "III", "form": "vial", "ug_per_unit": 10_000,
     "units_per_container": Decimal(20), "allowed_routes": ["IV", "IM", "SC"],
     "home_administration_allowed": True, "ndc": "12345-0002-20",
     "package_description": "20 mL multi-dose vial", "rxnorm_code": "6130"},
    # The Spravato REMS forbids dispensing esketamine for use at home.
    {"name": "Esketamine 28 mg nasal spray device", "active_ingredient": "esketamine",
     "dea_schedule": "III", "form": "nasal_device", "ug_per_unit": 28_000,
     "units_per_container": Decimal(1), "allowed_routes": ["intranasal"],
     "home_administration_allowed": False},
)


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
        # A fictional registrant's address: every DEA record prints one.
        org.address_line, org.city, org.state, org.postal_code = DEMO_ADDRESS
        org.phone = "+1 555 0100"
    users = {}
    for index, role in enumerate(Role, start=10):
        username = f"demo-{role.value}"
        user = session.scalar(select(User).where(User.organisation_id == org.id,
                                                 User.username == username))
        users[role] = user or accounts.create_user(
            session, rt, None, organisation_id=org.id, username=username,
            display_name=f"Demo {role.value.title()}", role=role,
            password=passwords[role.value], phone=f"+1 555 01{index:02d}",
            email=f"{username}@example.org")
    if not products.catalogue(session, _as(users[Role.PHARMACIST])):
        _seed_clinic(session, rt, users)
    return {f"demo-{role}": password for role, password in passwords.items()}


def _as(user: User) -> Caller:
    # The demo's seed writes plans and moves stock as its people; no one proved a factor.
    return Caller(user_id=user.id, organisation_id=user.organisation_id, role=user.role,
                  family_id=None, device_id=None, address=None, factor=FactorUse.standing("demo"))


def _seed_clinic(session: Session, rt: Runtime, users: dict[Role, User]) -> None:
    vial, *_ = [products.add(session, rt, _as(users[Role.PHARMACIST]), **product)
                for product in DEMO_PRODUCTS]
    today = rt.clock.now().date()
    for index, (mrn, name, born, sex, address, phone, latitude, longitude) in enumerate(
            DEMO_PATIENTS):
        patient = patients.register(
            session, rt, _as(users[Role.ADMIN]), mrn=mrn, name=name, date_of_birth=born, sex=sex,
            nurse_ids=[users[Role.NURSE].id], patient_id=None, address=address, phone=phone,
            home_latitude=latitude, home_longitude=longitude)
        prescriber = _as(users[Role.PRESCRIBER])
        policy = policy_for(session, prescriber.organisation_id)
        plan = plans.create(session, rt, prescriber, patient.id, plans.PlanSpec(
            product_id=vial.id, route="IV", dose_ug_per_kg=500, max_dose_ug=70_000,
            infusion_minutes=40, starts_on=today, phases=plans.default_phases(policy, today)))
        # Mornings for one patient, afternoons for the other: one nurse visits both.
        first = datetime.combine(today + timedelta(days=1), time(9 + 5 * index))
        timezone = accounts.organisation_zone(session, prescriber.organisation_id)
        visits.schedule_series(
            session, rt, _as(users[Role.ADMIN]), plan.id, nurse_id=users[Role.NURSE].id,
            first_start=first.replace(tzinfo=timezone), rule="FREQ=WEEKLY;BYDAY=MO,TH;COUNT=6",
            duration_minutes=None, override_reason=None)

"""The patient page lists each plan version: who signed it, with what, whether it verifies."""

from __future__ import annotations

import uuid

from sqlalchemy import update

from backend.accounts.models import Role
from backend.plans.models import PlanVersion
from tests.backend.console.conftest import signed_in
from tests.factories import Clinic, World


def _history(page: str) -> str:
    return page[page.index("Plan history"):page.index("</table>", page.index("Plan history"))]


def test_the_plan_history_names_each_signer_and_factor(world: World, clock):
    clinic = Clinic(world)
    plan = clinic.plan()
    clock.advance(seconds=3600)
    body = {"product_id": clinic.product_id, "route": "IV", "dose_ug_per_kg": 400,
            "max_dose_ug": 70_000, "infusion_minutes": 40, "starts_on": "2026-11-02",
            "change_reason": "dissociation too deep at 0.5 mg/kg"}
    changed = clinic.client.put(f"/api/v1/plans/{plan['id']}", headers=clinic.as_(
        Role.PRESCRIBER), json=body)
    assert changed.status_code == 200, changed.json
    desk = signed_in(world, clinic.org, clinic.users[Role.COMPLIANCE])
    page = desk.get(f"/console/patients/{clinic.patient_id}").get_data(as_text=True)
    history = _history(page)
    assert history.count("verified") == 2
    assert history.count(clinic.prescriber.username) == 2
    assert history.count("totp") == 2
    assert "dissociation too deep at 0.5 mg/kg" in history
    # The newest version first.
    assert history.index(">2<") < history.index(">1<")


def test_an_order_changed_after_signing_is_shown_as_not_matching(world: World):
    clinic = Clinic(world)
    plan = clinic.plan()
    world.session.execute(update(PlanVersion).where(
        PlanVersion.id == uuid.UUID(plan["versions"][0]["id"])).values(max_dose_ug=140_000))
    world.commit()
    desk = signed_in(world, clinic.org, clinic.users[Role.PRESCRIBER])
    page = desk.get(f"/console/patients/{clinic.patient_id}").get_data(as_text=True)
    assert "does not match its content" in _history(page)

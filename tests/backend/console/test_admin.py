"""The admin's pages: users, devices, policy thresholds and the organisation."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from backend.accounts.models import Organisation, Role, User
from backend.audit.models import AuditEvent
from backend.devices.models import Device
from backend.policy.models import PolicyOverride
from tests.backend.console.conftest import Desk, signed_in
from tests.factories import PASSWORD, World

A, PH, C, PR, N = Role.ADMIN, Role.PHARMACIST, Role.COMPLIANCE, Role.PRESCRIBER, Role.NURSE
DESK = (A, PH, C, PR)


class Office:
    """An organisation with one user of each role, a nurse's phone, and their browsers."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.org: Organisation = world.org()
        self.users: dict[Role, User] = {role: world.user(self.org, role) for role in Role}
        self.device_id, _phone = world.device(self.org, self.users[N])

    def desk(self, role: Role) -> Desk:
        """Return a browser signed in as the user with `role`."""
        return signed_in(self.world, self.org, self.users[role])

    def api(self, role: Role) -> dict:
        """Return API headers of the user with `role`."""
        return self.world.headers(self.org, self.users[role])

    def reread(self, model, key):
        """Return a row as the database holds it now."""
        self.world.session.expire_all()
        return self.world.session.get(model, key)


@pytest.fixture
def office(world: World) -> Office:
    """Return an organisation with everyone in it."""
    return Office(world)


def text(response) -> str:
    """Return a response's body as text."""
    return response.get_data(as_text=True)


def count(world: World, model, *where) -> int:
    """Count rows of `model` matching `where`."""
    return world.session.scalar(select(func.count()).select_from(model).where(*where))


@pytest.mark.parametrize(("path", "allowed"), [
    ("/console/users", {A}),
    ("/console/users/{user}", {A}),
    ("/console/devices", {A, C}),
    ("/console/policy", set(DESK)),
    ("/console/organisation", set(DESK)),
])
def test_each_page_opens_for_the_roles_the_api_allows(office: Office, path: str, allowed):
    path = path.format(user=office.users[N].id)
    for role in DESK:
        response = office.desk(role).get(path)
        assert response.status_code == (200 if role in allowed else 403), (role, path)
        if role in allowed:
            assert text(response).count("<h1") == 1


def test_a_nurse_cannot_sign_in(office: Office, desk: Desk):
    assert desk.sign_in(office.org, office.users[N]).status_code == 403


# Users ------------------------------------------------------------------------------------

def test_an_admin_adds_a_user(office: Office):
    browser = office.desk(A)
    browser.get("/console/users")
    answer = browser.post("/console/users", {"username": "new.pharmacist",
                                              "display_name": "Nora New", "role": "pharmacist",
                                              "password": PASSWORD})
    assert answer.status_code == 303
    assert "Added Nora New (new.pharmacist) as pharmacist." in text(browser.get("/console/users"))
    listed = office.world.client.get("/api/v1/users", headers=office.api(A)).json
    assert {"username": "new.pharmacist", "role": "pharmacist", "active": True}.items() <= next(
        u for u in listed if u["username"] == "new.pharmacist").items()
    new = office.world.session.scalar(select(User).where(User.username == "new.pharmacist"))
    assert signed_in(office.world, office.org, new).get("/console/").status_code == 302


@pytest.mark.parametrize(("form", "status", "field", "message"), [
    ({"password": "short"}, 422, "password", "Length must be between 12"),
    ({"username": "Bad Name!"}, 422, "username", "letters, digits"),
    ({"role": "overlord"}, 422, "role", "Must be one of"),
    ({"display_name": ""}, 422, "display_name", "Missing data"),
])
def test_a_user_the_api_refuses_is_shown_beside_the_field(office: Office, form, status,
                                                            field, message):
    browser = office.desk(A)
    browser.get("/console/users")
    before = count(office.world, User, User.organisation_id == office.org.id)
    answer = browser.post("/console/users", {"username": "someone", "display_name": "Some One",
                                              "role": "nurse", "password": PASSWORD, **form})
    assert answer.status_code == status
    page = text(answer)
    assert f'id="{field}-error"' in page and message in page
    assert PASSWORD not in page
    assert count(office.world, User, User.organisation_id == office.org.id) == before


def test_a_taken_username_is_a_conflict(office: Office):
    browser = office.desk(A)
    browser.get("/console/users")
    answer = browser.post("/console/users", {
        "username": office.users[N].username, "display_name": "Twin", "role": "nurse",
        "password": PASSWORD})
    assert answer.status_code == 409 and "is taken" in text(answer)


def test_an_admin_changes_a_role_and_the_old_sessions_end(office: Office):
    pharmacist = office.users[PH]
    their_api = office.api(PH)
    browser = office.desk(A)
    browser.get(f"/console/users/{pharmacist.id}")
    answer = browser.post(f"/console/users/{pharmacist.id}",
                          {"role": "compliance", "display_name": "Renamed Too"})
    assert answer.status_code == 303
    shown = text(browser.get(answer.headers["Location"]))
    assert "is now compliance (was pharmacist)" in shown
    assert office.reread(User, pharmacist.id).role == Role.COMPLIANCE
    assert office.reread(User, pharmacist.id).display_name == "Renamed Too"
    assert office.world.client.get("/api/v1/me", headers=their_api).status_code == 401


def test_an_admin_deactivates_a_user_whose_console_session_then_ends(office: Office):
    officer = office.users[C]
    their_desk = office.desk(C)
    their_api = office.api(C)
    assert their_desk.get("/console/audit").status_code == 200
    browser = office.desk(A)
    page = text(browser.get(f"/console/users/{officer.id}"))
    assert "Deactivate</button>" in page
    answer = browser.post(f"/console/users/{officer.id}", {"active": "false"})
    assert answer.status_code == 303
    assert "their console and app sessions ended" in text(browser.get(answer.headers["Location"]))
    assert office.reread(User, officer.id).active is False
    sent_away = their_desk.get("/console/audit")
    assert sent_away.status_code == 302
    assert "/console/login" in sent_away.headers["Location"]
    assert "ended=revoked" in sent_away.headers["Location"]
    assert office.world.client.get("/api/v1/me", headers=their_api).status_code == 401
    assert their_desk.sign_in(office.org, officer).status_code != 302
    # And back again.
    assert "Reactivate</button>" in text(browser.get(f"/console/users/{officer.id}"))
    assert browser.post(f"/console/users/{officer.id}", {"active": "true"}).status_code == 303
    assert office.reread(User, officer.id).active is True


def test_an_admin_cannot_deactivate_herself(office: Office):
    admin = office.users[A]
    browser = office.desk(A)
    browser.get(f"/console/users/{admin.id}")
    answer = browser.post(f"/console/users/{admin.id}", {"active": "false"})
    assert answer.status_code == 409
    assert "cannot deactivate or demote themselves" in text(answer)
    assert office.reread(User, admin.id).active is True
    assert browser.get("/console/users").status_code == 200


def test_a_bad_role_change_shows_beside_the_field(office: Office):
    nurse = office.users[N]
    browser = office.desk(A)
    browser.get(f"/console/users/{nurse.id}")
    answer = browser.post(f"/console/users/{nurse.id}", {"role": "overlord"})
    assert answer.status_code == 422 and 'id="role-error"' in text(answer)
    assert office.reread(User, nurse.id).role == Role.NURSE


def test_another_organisations_user_is_not_found(office: Office, world: World):
    other = world.org()
    stranger = world.user(other, N)
    browser = office.desk(A)
    assert browser.get(f"/console/users/{stranger.id}").status_code == 404
    assert browser.get("/console/users/not-an-id").status_code == 404
    assert browser.post(f"/console/users/{stranger.id}", {"active": "false"}).status_code == 404
    assert office.reread(User, stranger.id).active is True


def test_a_user_change_without_the_csrf_token_is_refused(office: Office):
    nurse = office.users[N]
    browser = office.desk(A)
    browser.get(f"/console/users/{nurse.id}")
    assert browser.post(f"/console/users/{nurse.id}", {"active": "false"},
                        token=False).status_code == 400
    assert browser.post("/console/users", {"username": "sneaky", "display_name": "S",
                                           "role": "admin", "password": PASSWORD},
                        token=False).status_code == 400
    assert office.reread(User, nurse.id).active is True
    assert count(office.world, User, User.username == "sneaky") == 0


def test_the_user_list_is_paged(office: Office):
    browser = office.desk(A)
    first = text(browser.get("/console/users?limit=2"))
    assert "Next page" in first and "Previous page" not in first
    last = text(browser.get("/console/users?limit=2&offset=4"))
    assert "Previous page" in last and "Next page" not in last


# Devices ----------------------------------------------------------------------------------

def test_the_devices_page_names_each_phones_nurse(office: Office):
    page = text(office.desk(C).get("/console/devices"))
    assert str(office.device_id) in page and office.users[N].display_name in page
    assert "Revoke</button>" not in page
    assert "Revoke</button>" in text(office.desk(A).get("/console/devices"))


def test_an_admin_revokes_a_phone(office: Office):
    phone_api = office.world.headers(office.org, office.users[N], office.device_id)
    browser = office.desk(A)
    browser.get("/console/devices")
    answer = browser.post(f"/console/devices/{office.device_id}/revoke")
    assert answer.status_code == 303
    page = text(browser.get("/console/devices"))
    assert "Revoked “phone”" in page and "Revoke</button>" not in page
    listed = office.world.client.get("/api/v1/devices", headers=office.api(A)).json
    assert next(d for d in listed if d["id"] == str(office.device_id))["revoked_at"]
    assert office.world.client.get("/api/v1/me", headers=phone_api).status_code == 401


def test_revoking_is_for_admins_and_their_own_organisation(office: Office, world: World):
    compliance = office.desk(C)
    compliance.get("/console/devices")
    assert compliance.post(f"/console/devices/{office.device_id}/revoke").status_code == 403
    other = Office(world)
    outsider = other.desk(A)
    outsider.get("/console/devices")
    assert outsider.post(f"/console/devices/{office.device_id}/revoke").status_code == 404
    assert outsider.post("/console/devices/nonsense/revoke").status_code == 404
    browser = office.desk(A)
    browser.get("/console/devices")
    assert browser.post(f"/console/devices/{office.device_id}/revoke",
                        token=False).status_code == 400
    assert office.reread(Device, office.device_id).revoked_at is None


# Policy -----------------------------------------------------------------------------------

def test_the_policy_page_shows_what_the_api_shows(office: Office):
    listed = office.world.client.get("/api/v1/policy", headers=office.api(PR)).json
    page = text(office.desk(PR).get("/console/policy"))
    for threshold in listed:
        assert f"<th scope=\"row\">{threshold['name']}</th>" in page
        assert f"<td class=\"num\">{threshold['minimum']}</td>" in page
    assert "<input" not in page.split("<main", 1)[1].split("</main>")[0]
    admin = text(office.desk(A).get("/console/policy"))
    assert '<label for="f-thresholds-evv_radius_m">evv_radius_m</label>' in admin


def test_an_admin_sets_thresholds_within_their_bounds(office: Office):
    browser = office.desk(A)
    browser.get("/console/policy")
    form = {f"thresholds.{t['name']}": t["value"] for t in office.world.client.get(
        "/api/v1/policy", headers=office.api(A)).json}
    answer = browser.post("/console/policy", {**form, "thresholds.evv_radius_m": "300",
                                              "thresholds.min_interval_hours": "72"})
    assert answer.status_code == 303
    assert "Saved evv_radius_m = 300, min_interval_hours = 72." in text(
        browser.get("/console/policy"))
    values = {t["name"]: t["value"] for t in office.world.client.get(
        "/api/v1/policy", headers=office.api(A)).json}
    assert values["evv_radius_m"] == "300" and values["min_interval_hours"] == "72"
    assert count(office.world, PolicyOverride, PolicyOverride.organisation_id == office.org.id) == 2
    # Emptied: back to the default; unchanged: nothing written.
    answer = browser.post("/console/policy", {**form, "thresholds.min_interval_hours": "72",
                                              "thresholds.evv_radius_m": ""})
    assert "evv_radius_m = its default" in text(browser.get(answer.headers["Location"]))
    assert count(office.world, PolicyOverride, PolicyOverride.organisation_id == office.org.id) == 1
    writes = count(office.world, AuditEvent, AuditEvent.action == "policy.set")
    browser.post("/console/policy", {**form, "thresholds.min_interval_hours": "72"})
    assert "No threshold changed." in text(browser.get("/console/policy"))
    assert count(office.world, AuditEvent, AuditEvent.action == "policy.set") == writes


@pytest.mark.parametrize(("value", "message"), [
    ("5000", "must be between 50 and 1609"),
    ("wide", "invalid literal for int()"),
    ("x" * 41, "Length must be between 1 and 40"),
])
def test_a_threshold_the_policy_refuses_shows_beside_its_field(office: Office, value, message):
    browser = office.desk(A)
    browser.get("/console/policy")
    answer = browser.post("/console/policy", {"thresholds.evv_radius_m": value,
                                              "thresholds.min_interval_hours": "72"})
    assert answer.status_code == 422
    page = text(answer)
    error = page.split('id="thresholds-evv_radius_m-error">', 1)[1].split("</span>")[0]
    assert message in error, error
    assert 'aria-invalid="true"' in page
    assert count(office.world, PolicyOverride, PolicyOverride.organisation_id == office.org.id) == 0


def test_only_admins_set_thresholds(office: Office):
    browser = office.desk(C)
    browser.get("/console/policy")
    assert browser.post("/console/policy",
                        {"thresholds.evv_radius_m": "300"}).status_code == 403
    admin = office.desk(A)
    admin.get("/console/policy")
    assert admin.post("/console/policy", {"thresholds.evv_radius_m": "300"},
                      token=False).status_code == 400
    assert count(office.world, PolicyOverride, PolicyOverride.organisation_id == office.org.id) == 0


# Organisation -----------------------------------------------------------------------------

def test_the_organisation_page_shows_its_details(office: Office):
    me = office.world.client.get("/api/v1/me", headers=office.api(PH)).json["organisation"]
    page = text(office.desk(PH).get("/console/organisation"))
    for key in ("name", "slug", "dea_registration", "timezone"):
        assert me[key] in page
    assert "PATCH /api/v1/organisation" in page and "Save details" not in page
    assert office.desk(PH).post("/console/organisation",
                                {"name": "Taken Over"}).status_code == 403


def test_an_admin_sets_the_registrants_address_and_a_blank_field_clears(office: Office):
    admin = office.desk(A)
    assert "Save details" in text(admin.get("/console/organisation"))
    filled = {"name": "Riverside Home Infusion", "dea_registration": office.org.dea_registration,
              "dea_expires_on": "2028-03-31", "address_line": "1 Registered Way",
              "city": "Springfield", "state": "IL", "postal_code": "62701",
              "phone": "+1 217 555 0100"}
    assert admin.post("/console/organisation", filled).status_code == 303
    page = text(admin.get("/console/organisation"))
    assert "1 Registered Way, Springfield IL 62701" in page and "2028-03-31" in page
    assert admin.post("/console/organisation", {**filled, "phone": ""}).status_code == 303
    assert office.reread(Organisation, office.org.id).phone is None


def test_a_bad_registrant_field_shows_beside_it_and_changes_nothing(office: Office):
    admin = office.desk(A)
    admin.get("/console/organisation")
    number = office.org.dea_registration
    for form, problem in (({"dea_registration": number, "postal_code": "6270"}, "ZIP code"),
                          ({"dea_registration": "AB1234567"}, "check digit")):
        refused = admin.post("/console/organisation", {"name": "X", **form})
        assert refused.status_code == 422
        assert problem in text(refused)
    assert office.reread(Organisation, office.org.id).name != "X"


def test_an_admin_sets_and_clears_a_users_contacts(office: Office):
    admin, nurse = office.desk(A), office.users[N]
    path = f"/console/users/{nurse.id}"
    admin.get(path)
    assert admin.post(path, {"role": "nurse", "display_name": nurse.display_name,
                             "phone": "+1 555 0142", "email": "nurse@example.org"}
                      ).status_code == 303
    assert "nurse@example.org" in text(admin.get(path))
    assert admin.post(path, {"role": "nurse", "display_name": nurse.display_name}
                      ).status_code == 303
    assert (office.reread(User, nurse.id).phone, office.reread(User, nurse.id).email) == (
        None, None)


def test_unknown_ids_are_uuids_or_not_found(office: Office):
    assert office.desk(A).get(f"/console/users/{uuid.uuid4()}").status_code == 404

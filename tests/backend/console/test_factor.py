"""The console's second factor: the sign-in's second step (a code, a recovery code, a security key,
or the enrolment past the grace), the grace's banner, the step-up page, the account page, and
the admin's reset."""

from __future__ import annotations

import html
import json
import re
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from backend.accounts.models import Organisation, Role, User
from backend.audit.models import AuditEvent
from backend.auth.models import TokenFamily
from backend.mfa.models import RecoveryCode, SecondFactor
from tests.backend.console.conftest import FACTOR_STEP, Desk, signed_in
from tests.backend.mfa.security_key import SecurityKey
from tests.factories import PASSWORD, World

A, PH, C, PR, N = Role.ADMIN, Role.PHARMACIST, Role.COMPLIANCE, Role.PRESCRIBER, Role.NURSE
FACTORS = "/console/account/factors"
STEP_UP = "/console/step-up"
WRONG = "wrong, expired or already used"
QR = re.compile(r"<svg[^>]*>.*?</svg>", re.DOTALL)
KEY = re.compile(r'<code class="secret">([A-Z2-7 ]+)</code>')
OPTIONS = re.compile(r'data-options="([^"]+)"')
CODE = re.compile(r"<li><code>([A-Z2-7]{4}(?:-[A-Z2-7]{4}){3})</code></li>")


class Office:
    """An organisation with one user of each role (desk users with a TOTP factor)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.org: Organisation = world.org()
        self.users: dict[Role, User] = {role: world.user(self.org, role) for role in Role}

    def desk(self, role: Role) -> Desk:
        """Return a browser signed in as the user with `role`."""
        return signed_in(self.world, self.org, self.users[role])

    def browser(self) -> Desk:
        """Return a signed-out browser."""
        return Desk(self.world.app.test_client(), self.world)

    def password(self, role: Role) -> tuple[Desk, object]:
        """Post the sign-in form's first step as `role`; return the browser and its answer."""
        desk, user = self.browser(), self.users[role]
        desk.get("/console/login")
        return desk, desk.post("/console/login", {"org": self.org.slug,
                                                  "username": user.username,
                                                  "password": PASSWORD})

    def families(self, role: Role) -> list[TokenFamily]:
        """Return the token families of the user with `role`, oldest first."""
        self.world.session.expire_all()
        return list(self.world.session.scalars(select(TokenFamily).where(
            TokenFamily.user_id == self.users[role].id).order_by(TokenFamily.created_at)))

    def actions(self, role: Role) -> list[str]:
        """Return the audit actions written as or about the user with `role`, oldest first."""
        user_id = self.users[role].id
        return list(self.world.session.scalars(select(AuditEvent.action).where(
            (AuditEvent.user_id == user_id) | (AuditEvent.object_id == str(user_id)))
            .order_by(AuditEvent.occurred_at, AuditEvent.id)))

    def factors(self, role: Role) -> list[SecondFactor]:
        """Return the user's factors not removed, oldest first."""
        self.world.session.expire_all()
        return list(self.world.session.scalars(select(SecondFactor).where(
            SecondFactor.user_id == self.users[role].id, SecondFactor.removed_at.is_(None))
            .order_by(SecondFactor.created_at)))

    def recovery_codes(self, role: Role) -> list[str]:
        """Issue the user fresh recovery codes through the API; return them."""
        user = self.users[role]
        answer = self.world.client.post(
            "/api/v1/me/recovery-codes", headers=self.world.headers(self.org, user),
            json={"code": self.world.code(user)})
        assert answer.status_code == 200, answer.json
        return answer.json["recovery_codes"]


@pytest.fixture
def office(world: World) -> Office:
    """Return an organisation with everyone in it."""
    return Office(world)


def text(response) -> str:
    """Return a response's body as text."""
    return response.get_data(as_text=True)


def wrong_code(world: World, user: User) -> str:
    """Return six digits that match no step the server accepts now."""
    totp, now = world.totp(user), world.rt.clock.now()
    near = {totp.at(now, counter_offset=steps) for steps in (-1, 0, 1)}
    return next(f"{n:06d}" for n in range(1_000_000) if f"{n:06d}" not in near)


# Sign-in ----------------------------------------------------------------------------------

@pytest.mark.parametrize("role", [A, PH, C, PR])
def test_a_desk_user_with_a_factor_signs_in_with_a_code(office: Office, role: Role):
    desk, answer = office.password(role)
    assert answer.status_code == 302 and answer.headers["Location"] == FACTOR_STEP
    assert office.families(role) == []  # the password alone opened nothing
    step = desk.get(FACTOR_STEP)
    page = text(step)
    assert step.status_code == 200
    assert ">Code</label>" in page and 'autocomplete="one-time-code"' in page
    assert "Use a security key" not in page and "webauthn.js" not in page
    done = desk.post(FACTOR_STEP, {"code": office.world.code(office.users[role])})
    assert done.status_code == 302 and done.headers["Location"] == "/console/"
    assert "/console/login" not in desk.get("/console/").headers.get("Location", "")
    [family] = office.families(role)
    assert family.factor_method == "totp" and family.factor_at == office.world.rt.clock.now()
    assert family.factor_id == office.factors(role)[0].id
    assert "auth.mfa_challenge" in office.actions(role)


def test_the_cookie_carries_the_challenge_and_never_the_password(office: Office):
    desk, _answer = office.password(PH)
    cookie = desk.client.get_cookie("vigil_console", path="/console").value
    kept = office.world.app.session_interface.get_signing_serializer(office.world.app).loads(
        cookie)
    assert set(kept) == {"challenge", "next"}
    assert PASSWORD not in json.dumps(kept)


def test_a_recovery_code_signs_in_once(office: Office):
    codes = office.recovery_codes(C)
    desk, _answer = office.password(C)
    desk.get(FACTOR_STEP)
    assert desk.post(FACTOR_STEP, {"code": codes[0].lower()}).status_code == 302
    assert office.families(C)[-1].factor_method == "recovery_code"
    again, _answer = office.password(C)
    again.get(FACTOR_STEP)
    refused = again.post(FACTOR_STEP, {"code": codes[0]})
    assert refused.status_code == 422
    assert WRONG in text(refused)
    assert "mfa.recovery_code_used" in office.actions(C)


def test_a_wrong_code_is_refused_beside_the_field_counted_and_audited(office: Office):
    user = office.users[PH]
    desk, _answer = office.password(PH)
    desk.get(FACTOR_STEP)
    refused = desk.post(FACTOR_STEP, {"code": wrong_code(office.world, user)})
    page = text(refused)
    assert refused.status_code == 422
    assert 'aria-invalid="true"' in page and WRONG in page
    assert "mfa.code_failed" in office.actions(PH)
    assert office.families(PH) == []
    # Wrong codes count toward the lockout that wrong passwords share.
    for _ in range(office.world.app.config["LOGIN_MAX_PER_ACCOUNT"] - 1):
        assert desk.post(FACTOR_STEP, {"code": wrong_code(office.world, user)}).status_code == 422
    locked = desk.post(FACTOR_STEP, {"code": office.world.code(user)})
    assert locked.status_code == 429
    assert office.password(PH)[1].status_code == 429


def test_a_malformed_code_is_refused_by_the_schema(office: Office):
    desk, _answer = office.password(A)
    desk.get(FACTOR_STEP)
    refused = desk.post(FACTOR_STEP, {"code": "12345"})
    assert refused.status_code == 422
    assert "not a code of the right form" in text(refused)


def test_the_second_step_needs_a_first(desk: Desk):
    assert desk.get(FACTOR_STEP).headers["Location"] == "/console/login"
    assert desk.post(FACTOR_STEP, {"code": "123456"}).headers["Location"] == "/console/login"


def test_an_expired_challenge_sends_back_to_the_password(office: Office, clock):
    desk, _answer = office.password(PR)
    desk.get(FACTOR_STEP)
    clock.advance(minutes=6)
    answer = desk.post(FACTOR_STEP, {"code": office.world.code(office.users[PR])})
    assert answer.status_code == 401
    assert "The challenge has expired; sign in again." in text(answer)
    assert ">Password</label>" in text(answer)
    assert office.families(PR) == []


def test_the_second_step_keeps_where_the_user_was_going(office: Office):
    answer = office.browser().sign_in(office.org, office.users[C], next="/console/audit")
    assert answer.headers["Location"] == "/console/audit"


@pytest.mark.parametrize("grace_over", [False, True], ids=["in-grace", "past-grace"])
def test_a_user_without_a_factor(world: World, clock, grace_over: bool):
    org = world.org()
    user = world.user(org, PH, factor=False)
    if grace_over:
        clock.advance(days=8)
    desk = Desk(world.app.test_client(), world)
    desk.get("/console/login")
    answer = desk.post("/console/login", {"org": org.slug, "username": user.username,
                                          "password": PASSWORD})
    assert answer.headers["Location"] == (FACTOR_STEP if grace_over else "/console/")


def test_past_the_grace_the_sign_in_enrols_a_factor(world: World, clock):
    org = world.org()
    user = world.user(org, PR, factor=False)
    clock.advance(days=8)
    desk = Desk(world.app.test_client(), world)
    desk.get("/console/login")
    desk.post("/console/login", {"org": org.slug, "username": user.username,
                                 "password": PASSWORD})
    step = text(desk.get(FACTOR_STEP))
    assert "Set up a second factor" in step
    qr, key = QR.search(step).group(0), KEY.search(step).group(1)
    assert "style" not in qr and "<title>" in qr
    # A wrong code shows the same enrolment again, to try once more.
    refused = desk.post(FACTOR_STEP, {"code": "000000"})
    assert refused.status_code == 422 and KEY.search(text(refused)).group(1) == key
    assert KEY.search(text(desk.get(FACTOR_STEP))).group(1) == key
    done = desk.post(FACTOR_STEP, {"code": desk.code(user, desk.get(FACTOR_STEP))})
    assert done.status_code == 200
    codes = CODE.findall(text(done))
    assert len(codes) == 10 and "shown only this once" in text(done)
    assert "/console/login" not in desk.get("/console/").headers.get("Location", "")
    world.session.expire_all()
    family = world.session.scalar(select(TokenFamily).where(TokenFamily.user_id == user.id))
    assert family.factor_method == "totp"
    assert len(world.session.scalars(select(RecoveryCode).where(
        RecoveryCode.user_id == user.id)).all()) == 10


def test_the_enrolment_is_shown_again_while_it_waits_for_its_code(world: World, clock):
    org = world.org()
    user = world.user(org, C, factor=False)
    clock.advance(days=8)
    desk = Desk(world.app.test_client(), world)
    desk.get("/console/login")
    desk.post("/console/login", {"org": org.slug, "username": user.username,
                                 "password": PASSWORD})
    first = KEY.search(text(desk.get(FACTOR_STEP))).group(1)
    clock.advance(minutes=4)
    assert KEY.search(text(desk.get(FACTOR_STEP))).group(1) == first
    assert len(world.session.scalars(select(SecondFactor).where(
        SecondFactor.user_id == user.id)).all()) == 1


def test_nurses_are_refused_before_any_second_step(world: World):
    org = world.org()
    world.session.get(Organisation, org.id).mfa_nurses = True
    world.commit()
    nurse = world.user(org, N, factor=True)
    desk = Desk(world.app.test_client(), world)
    answer = desk.sign_in(org, nurse)
    assert answer.status_code == 403 and "phone app" in text(answer)
    assert "challenge" not in desk.client.get_cookie("vigil_console", path="/console").value
    assert world.session.scalar(select(AuditEvent.id).where(
        AuditEvent.action == "auth.mfa_challenge", AuditEvent.user_id == nurse.id)) is None


# The grace's banner ------------------------------------------------------------------------

def test_within_the_grace_every_page_says_when_a_factor_is_due(world: World, clock):
    org = world.org()
    user = world.user(org, C, factor=False)
    desk = signed_in(world, org, user)
    due = (clock.now() + timedelta(days=7)).strftime("%Y-%m-%d %H:%M UTC")
    for path in ("/console/flags", "/console/audit", FACTORS):
        page = text(desk.get(path))
        assert f"needs a second factor from {due}" in page, path
        assert f'href="{FACTORS}">Add one now</a>' in page


def test_a_user_with_a_factor_sees_no_banner(office: Office):
    assert "needs a second factor" not in text(office.desk(C).get("/console/flags"))


# Step-up ----------------------------------------------------------------------------------

def _older_than_the_window(desk: Desk, clock) -> None:
    """Let 20 minutes pass, the session kept alive within its 15 idle minutes."""
    clock.advance(minutes=10)
    desk.get("/console/")
    clock.advance(minutes=10)


def test_the_step_up_page_proves_a_factor_again_and_goes_back(office: Office, clock):
    desk = office.desk(PH)
    _older_than_the_window(desk, clock)
    page = text(desk.get(f"{STEP_UP}?next=/console/losses"))
    assert "Confirm your second factor" in page and "within the last 15 minutes" in page
    assert 'name="next" value="/console/losses"' in page
    refused = desk.post(STEP_UP, {"code": wrong_code(office.world, office.users[PH]),
                                  "next": "/console/losses"})
    assert refused.status_code == 422 and WRONG in text(refused)
    assert office.families(PH)[0].factor_at == clock.now() - timedelta(minutes=20)
    done = desk.post(STEP_UP, {"code": office.world.code(office.users[PH]),
                               "next": "/console/losses"})
    assert done.status_code == 303 and done.headers["Location"] == "/console/losses"
    assert office.families(PH)[0].factor_at == clock.now()
    until = (clock.now() + timedelta(minutes=15)).strftime("%Y-%m-%d %H:%M UTC")
    assert f"sensitive actions are open until {until}" in text(desk.get("/console/losses"))
    assert "auth.step_up" in office.actions(PH)


@pytest.mark.parametrize("target", ["https://elsewhere.example/", "//elsewhere.example/",
                                    "/api/v1/me"])
def test_the_step_up_goes_back_only_to_a_console_page(office: Office, target):
    desk = office.desk(A)
    desk.get(STEP_UP)
    answer = desk.post(STEP_UP, {"code": office.world.code(office.users[A]), "next": target})
    assert answer.headers["Location"] == "/console/"


def test_the_step_up_page_sends_a_user_without_a_factor_to_enrol(world: World):
    org = world.org()
    user = world.user(org, PR, factor=False)
    page = text(signed_in(world, org, user).get(STEP_UP))
    assert "You have no second factor yet" in page and f'href="{FACTORS}"' in page
    assert 'name="code"' not in page


# The account page ---------------------------------------------------------------------------

@pytest.mark.parametrize("role", [A, PH, C, PR])
def test_every_desk_role_has_the_account_page_in_its_menu(office: Office, role: Role):
    desk = office.desk(role)
    page = text(desk.get(FACTORS))
    assert f'<a href="{FACTORS}" aria-current="page">Second factor</a>' in page
    assert "My account" in page
    assert "Test authenticator" in page and "confirmed" in page


def test_replacing_the_authenticator_app_needs_a_code_and_shows_codes_once(office: Office):
    user = office.users[PR]
    desk = office.desk(PR)
    [old] = office.factors(PR)
    refused = desk.post(f"{FACTORS}/totp", {"label": "New phone"})
    assert refused.status_code == 422
    assert "a current code or a recovery code is needed" in text(refused)
    begun = desk.post(f"{FACTORS}/totp", {"label": "New phone",
                                          "code": office.world.code(user)})
    assert begun.status_code == 303 and begun.headers["Location"] == f"{FACTORS}/totp"
    page = text(desk.get(f"{FACTORS}/totp"))
    assert QR.search(page) and "Add an authenticator app" in page
    wrong = desk.post(f"{FACTORS}/totp/confirm", {"code": "000000"})
    assert wrong.status_code == 422 and QR.search(text(wrong))
    confirmed = desk.post(f"{FACTORS}/totp/confirm", {
        "code": desk.code(user, desk.get(f"{FACTORS}/totp"))})
    assert confirmed.status_code == 200
    assert len(CODE.findall(text(confirmed))) == 10
    [new] = office.factors(PR)
    assert new.id != old.id and new.label == "New phone"
    assert "mfa.re_enrol" in office.actions(PR)
    # Shown once: nothing on the account page repeats them.
    assert not CODE.findall(text(desk.get(FACTORS)))


def test_the_enrolment_page_without_a_pending_one_goes_back(office: Office):
    desk = office.desk(C)
    answer = desk.get(f"{FACTORS}/totp")
    assert answer.status_code == 303 and answer.headers["Location"] == FACTORS


def test_an_enrolment_confirmed_too_late_begins_again(office: Office, clock):
    user = office.users[C]
    desk = office.desk(C)
    desk.post(f"{FACTORS}/totp", {"code": office.world.code(user)})
    code = desk.code(user, desk.get(f"{FACTORS}/totp"))
    clock.advance(minutes=11)
    late = desk.post(f"{FACTORS}/totp/confirm", {"code": code})
    assert late.status_code == 303 and late.headers["Location"] == FACTORS
    assert "This enrolment has expired; begin again." in text(desk.get(FACTORS))
    # The confirmed factor stays; the expired enrolment is still pending, made at the same time.
    assert sorted((factor.confirmed_at is None, factor.label)
                  for factor in office.factors(C)) == [(False, "Test authenticator"),
                                                       (True, "Authenticator app")]


def test_a_factor_is_removed_with_a_code(office: Office):
    user = office.users[C]
    desk = office.desk(C)
    [factor] = office.factors(C)
    path = f"{FACTORS}/{factor.id}/remove"
    refused = desk.post(path, {"code": wrong_code(office.world, user)})
    assert refused.status_code == 422
    assert f'id="f-remove-{factor.id}-error"' in text(refused)
    done = desk.post(path, {"code": office.world.code(user)})
    assert done.status_code == 303
    assert "The second factor is removed." in text(desk.get(FACTORS))
    assert office.factors(C) == []
    assert "mfa.remove" in office.actions(C)


def test_new_recovery_codes_need_a_code_and_are_shown_once(office: Office):
    user = office.users[A]
    desk = office.desk(A)
    refused = desk.post("/console/account/recovery-codes", {"code": "not a code"})
    assert refused.status_code == 422
    issued = desk.post("/console/account/recovery-codes", {"code": office.world.code(user)})
    codes = CODE.findall(text(issued))
    assert issued.status_code == 200 and len(codes) == 10
    assert "You have 10 unused recovery codes" in text(desk.get(FACTORS))


def test_another_users_factor_cannot_be_removed(office: Office):
    [theirs] = office.factors(PH)
    desk = office.desk(C)
    answer = desk.post(f"{FACTORS}/{theirs.id}/remove", {"code": office.world.code(
        office.users[C])})
    assert answer.status_code == 404
    assert office.factors(PH) == [theirs]


# Security keys --------------------------------------------------------------------------------

def _register(office: Office, desk: Desk, role: Role, key: SecurityKey):
    begun = desk.post(f"{FACTORS}/key", {"label": "Blue key",
                                         "code": office.world.code(office.users[role])})
    assert begun.status_code == 200, text(begun)
    page = text(begun)
    assert "webauthn.js" in page and 'data-webauthn="create"' in page
    options = json.loads(html.unescape(OPTIONS.search(page).group(1)))
    factor_id = re.search(r'action="/console/account/factors/key/([0-9a-f-]+)"', page).group(1)
    return desk.post(f"{FACTORS}/key/{factor_id}", {
        "credential": json.dumps(key.register(options["public_key"]))})


def test_a_security_key_is_added_and_signs_in(office: Office):
    key = SecurityKey()
    desk = office.desk(PH)
    added = _register(office, desk, PH, key)
    assert added.status_code == 303
    assert "Blue key is registered." in text(desk.get(FACTORS))
    assert sorted(f.kind.value for f in office.factors(PH)) == ["totp", "webauthn"]

    browser, _answer = office.password(PH)
    step = text(browser.get(FACTOR_STEP))
    assert "Use a security key" in step and "webauthn.js" in step
    options = browser.client.post("/console/login/webauthn-options",
                                  headers={"X-CSRFToken": browser.token})
    assert options.status_code == 200, text(options)
    done = browser.post(FACTOR_STEP, {"credential": json.dumps(
        key.assertion(options.json["public_key"]))})
    assert done.status_code == 302 and done.headers["Location"] == "/console/"
    assert office.families(PH)[-1].factor_method == "webauthn"


def test_a_security_key_steps_up(office: Office, clock):
    key = SecurityKey()
    desk = office.desk(A)
    _register(office, desk, A, key)
    _older_than_the_window(desk, clock)
    assert "Use a security key" in text(desk.get(STEP_UP))
    options = desk.client.post(f"{STEP_UP}/webauthn-options",
                               headers={"X-CSRFToken": desk.token})
    assert options.status_code == 200
    done = desk.post(STEP_UP, {"credential": json.dumps(
        key.assertion(options.json["public_key"])), "next": "/console/users"})
    assert done.status_code == 303 and done.headers["Location"] == "/console/users"
    assert office.families(A)[0].factor_method == "webauthn"


def test_a_key_answer_that_is_not_json_is_refused(office: Office):
    desk, _answer = office.password(C)
    desk.get(FACTOR_STEP)
    refused = desk.post(FACTOR_STEP, {"credential": "{not json"})
    assert refused.status_code == 422 and "Some fields need correcting." in text(refused)
    assert office.families(C) == []


# The admin's reset ---------------------------------------------------------------------------

def test_an_admin_resets_a_users_factor(office: Office, clock):
    admin = office.desk(A)
    theirs = office.desk(PH)
    pharmacist = office.users[PH]
    page = text(admin.get(f"/console/users/{pharmacist.id}"))
    assert "<dt>Second factor</dt><dd>Authenticator app</dd>" in page
    done = admin.post(f"/console/users/{pharmacist.id}/factors/reset")
    assert done.status_code == 303
    page = text(admin.get(f"/console/users/{pharmacist.id}"))
    assert "Reset the second factor of Test User" in page
    assert "they enrol one at their next sign-in" in page
    assert "Reset second factor</button>" not in page
    assert office.factors(PH) == []
    assert "mfa.reset" in office.actions(PH)
    # Their session ended; the next sign-in enrols a new factor at once, whatever the grace.
    assert theirs.get("/console/").headers["Location"].startswith("/console/login")
    _desk, answer = office.password(PH)
    assert answer.headers["Location"] == FACTOR_STEP
    assert "Set up a second factor" in text(_desk.get(FACTOR_STEP))


def test_an_admin_cannot_reset_her_own_factor(office: Office):
    admin = office.desk(A)
    own = office.users[A].id
    assert "Reset second factor</button>" not in text(admin.get(f"/console/users/{own}"))
    refused = admin.post(f"/console/users/{own}/factors/reset")
    assert refused.status_code == 409
    assert "Admins cannot reset their own second factor" in text(refused)
    assert len(office.factors(A)) == 1


def test_another_organisations_user_cannot_be_reset(office: Office, world: World):
    other = world.org()
    stranger = world.user(other, PH)
    admin = office.desk(A)
    assert admin.post(f"/console/users/{stranger.id}/factors/reset").status_code == 404
    world.session.expire_all()
    assert world.session.scalar(select(SecondFactor.id).where(
        SecondFactor.user_id == stranger.id, SecondFactor.removed_at.is_(None))) is not None


@pytest.mark.parametrize("role", [PH, C, PR])
def test_only_an_admin_resets(office: Office, role: Role):
    target = office.users[N if role != PH else C].id
    answer = office.desk(role).post(f"/console/users/{target}/factors/reset")
    assert answer.status_code == 403


# CSRF ------------------------------------------------------------------------------------------

NEW_FORMS = ["/console/step-up", "/console/step-up/webauthn-options", f"{FACTORS}/totp",
             f"{FACTORS}/totp/confirm", f"{FACTORS}/key", f"{FACTORS}/key/{{factor}}",
             f"{FACTORS}/{{factor}}/remove", "/console/account/recovery-codes",
             "/console/users/{user}/factors/reset"]


@pytest.mark.parametrize("path", NEW_FORMS)
def test_every_new_form_needs_its_csrf_token(office: Office, path: str):
    [factor] = office.factors(A)
    desk = office.desk(A)
    before = office.families(A)[0].factor_at
    answer = desk.post(path.format(factor=factor.id, user=office.users[PH].id),
                       {"code": office.world.code(office.users[A])}, token=False)
    assert answer.status_code == 400
    assert "Reload the page" in text(answer)
    assert office.factors(A) == [factor] and len(office.factors(PH)) == 1
    assert office.families(A)[0].factor_at == before


@pytest.mark.parametrize("path", [FACTOR_STEP, "/console/login/webauthn-options"])
def test_the_second_step_needs_its_csrf_token(office: Office, path: str):
    desk, _answer = office.password(PH)
    desk.get(FACTOR_STEP)
    answer = desk.post(path, {"code": office.world.code(office.users[PH])}, token=False)
    assert answer.status_code == 400
    assert office.families(PH) == []


def test_the_new_pages_set_no_inline_script_or_style(office: Office):
    desk = office.desk(PR)
    desk.post(f"{FACTORS}/totp", {"code": office.world.code(office.users[PR])})
    for path in (FACTORS, f"{FACTORS}/totp", STEP_UP):
        page = text(desk.get(path))
        assert "style=" not in page, path
        assert all('src="/console/static/' in tag for tag in re.findall(r"<script[^>]*>", page))


def test_an_unknown_factor_id_is_not_found(office: Office):
    desk = office.desk(C)
    answer = desk.post(f"{FACTORS}/{uuid.uuid4()}/remove",
                       {"code": office.world.code(office.users[C])})
    assert answer.status_code == 404
    assert desk.post(f"{FACTORS}/not-an-id/remove", {"code": "123456"}).status_code == 404

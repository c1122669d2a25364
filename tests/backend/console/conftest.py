"""A desk user's browser, as a test client that signs in (with the user's second factor when
the console asks for it) and posts forms with their CSRF token."""

from __future__ import annotations

import re

import pyotp
import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from backend.accounts.models import Organisation, User
from backend.mfa.models import FactorKind, SecondFactor
from tests.factories import PASSWORD, World

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
FACTOR_STEP = "/console/login/factor"
# The key an enrolment page shows for typing into an app, in groups of four.
SHOWN_KEY = re.compile(r'<code class="secret">([A-Z2-7 ]+)</code>')


class Desk:
    """One browser at the console: its cookie jar, and the CSRF token of the last page."""

    def __init__(self, client: FlaskClient, world: World | None = None) -> None:
        self.client = client
        self.token: str | None = None
        self._world = world

    @property
    def world(self) -> World:
        """Return the World that knows the users' authenticators (one of its own if not given)."""
        if self._world is None:
            self._world = World(self.client.application)
        return self._world

    def get(self, path: str, **kwargs):
        """Open a page, remembering the CSRF token its forms carry."""
        response = self.client.get(path, **kwargs)
        if found := TOKEN.search(response.get_data(as_text=True)):
            self.token = found.group(1)
        return response

    def post(self, path: str, data: dict | None = None, *, token: bool = True, **kwargs):
        """Post a form as the page would, with the CSRF token unless `token` is False."""
        if self.token is None:
            self.get("/console/login")
        form = dict(data or {})
        if token:
            form["csrf_token"] = self.token
        response = self.client.post(path, data=form, **kwargs)
        if found := TOKEN.search(response.get_data(as_text=True)):
            self.token = found.group(1)
        return response

    def sign_in(self, org: Organisation, user: User, password: str = PASSWORD, *,
                next: str | None = None):
        """Sign in through the form, with the second factor where it is asked (enrolling one
        when the console shows a QR code); return the last answer (302 onward when it worked)."""
        self.get("/console/login")
        form = {"org": org.slug, "username": user.username, "password": password}
        answer = self.post("/console/login", {**form, "next": next} if next else form)
        if answer.headers.get("Location") != FACTOR_STEP:
            return answer
        return self.post(FACTOR_STEP, {"code": self.code(user, self.get(FACTOR_STEP))})

    def code(self, user: User, step=None) -> str:
        """Return `user`'s current code: of the key an enrolment `step` shows, else their factor."""
        authenticators = self.world.authenticators
        shown = step is not None and SHOWN_KEY.search(step.get_data(as_text=True))
        if shown:
            authenticators[user.id] = pyotp.TOTP(shown.group(1).replace(" ", ""))
        elif user.id not in authenticators:
            authenticators[user.id] = pyotp.TOTP(self.world.session.scalar(
                select(SecondFactor).where(
                    SecondFactor.user_id == user.id, SecondFactor.kind == FactorKind.TOTP,
                    SecondFactor.confirmed_at.is_not(None), SecondFactor.removed_at.is_(None))
            ).secret)
        return self.world.code(user)


@pytest.fixture
def desk(world) -> Desk:
    """Return a signed-out browser on the test's app."""
    return Desk(world.app.test_client(), world)


def signed_in(world: World, org: Organisation, user: User) -> Desk:
    """Return a browser signed in as `user` (with their second factor, if they have one)."""
    browser = Desk(world.app.test_client(), world)
    answer = browser.sign_in(org, user)
    assert answer.status_code == 302, answer.get_data(as_text=True)
    browser.get("/console/", follow_redirects=True)
    return browser

"""A desk user's browser, as a test client that signs in and posts forms with their CSRF token."""

from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient

from backend.accounts.models import Organisation, User
from tests.factories import PASSWORD, World

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


class Desk:
    """One browser at the console: its cookie jar, and the CSRF token of the last page."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client
        self.token: str | None = None

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

    def sign_in(self, org: Organisation, user: User, password: str = PASSWORD):
        """Sign in through the form; return the answer (302 to the console when it worked)."""
        self.get("/console/login")
        return self.post("/console/login", {"org": org.slug, "username": user.username,
                                            "password": password})


@pytest.fixture
def desk(app) -> Desk:
    """Return a signed-out browser on the test's app."""
    return Desk(app.test_client())


def signed_in(world: World, org: Organisation, user: User) -> Desk:
    """Return a browser signed in as `user`."""
    browser = Desk(world.app.test_client())
    answer = browser.sign_in(org, user)
    assert answer.status_code == 302, answer.get_data(as_text=True)
    browser.get("/console/", follow_redirects=True)
    return browser

"""A headless Chromium against a live Vigil server, on SQLite and on PostgreSQL.

One browser per session (Debian's chromium, driven by Playwright), a fresh context per test.
The `page` fixture fails its test when the page asks anything of another host (the console
must work with no network) or logs an error to its console (a CSP violation among them).
Without chromium, Playwright or axe-core the suite skips locally and fails in CI.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from backend import config, schema
from backend.accounts.models import Role
from backend.db import build_engine
from tests.backend.conftest import IN_CI, own_postgres_database
from tests.browser.live import LiveServer, Seeded, seed
from tests.factories import PASSWORD

try:
    from playwright.sync_api import expect
except ImportError:  # `chromium` skips (fails in CI) before any test can use it
    expect = None

CHROMIUM = Path(os.environ.get("VIGIL_CHROMIUM", "/usr/bin/chromium"))
AXE_SCRIPT = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"
# Long enough for a loaded CI machine, short enough that a hung page fails fast.
TIMEOUT_MS = 10_000
BLOCKING = ("serious", "critical")
SECOND_STEP = "/console/login/factor"


def unavailable(reason: str) -> None:
    """Skip the browser tests locally; fail them in CI, where every tool must be there."""
    if IN_CI:
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium():
    """Yield one headless Chromium for the session."""
    if not CHROMIUM.exists():
        unavailable(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    if expect is None:
        unavailable("Playwright is not installed (pip install -e '.[dev]')")
    from playwright.sync_api import sync_playwright

    if not AXE_SCRIPT.exists():
        unavailable(f"axe-core is missing at {AXE_SCRIPT} (npm ci --prefix tests/browser)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def live(request, tmp_path_factory, chromium) -> Iterator[LiveServer]:
    """Yield a seeded live server on a freshly migrated database of its own, one per backend."""
    instance = tmp_path_factory.mktemp(f"browser-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{instance / 'vigil.sqlite3'}"
        engine = build_engine(url)
        schema.upgrade(engine)
        engine.dispose()
    else:
        url = own_postgres_database("browser")
    with pytest.MonkeyPatch.context() as environ:
        # Only the test's settings count, as tests/backend/conftest.py's clean_environ does.
        for setting in config.SETTINGS:
            environ.delenv(setting.env, raising=False)
        server = LiveServer.on(url, instance)
    try:
        server.seeded = seed(server.app)
        yield server.start()
    finally:
        server.stop()
        if request.param == "postgresql":
            _drop(url)


def _drop(url: str) -> None:
    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def seeded(live) -> Seeded:
    """Return what the live server's seed made."""
    return live.seeded


@dataclass
class Watch:
    """What a test's pages asked for, what they logged as errors, and what the test expects."""

    origin: str
    requests: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    expected: list[re.Pattern] = field(default_factory=list)

    def expect_error_status(self, status: int) -> None:
        """Accept the console's note that a page answered `status` (a refusal the test wants)."""
        self.expected.append(re.compile(
            rf"Failed to load resource: the server responded with a status of {status}\b"))

    def unexpected_errors(self) -> list[str]:
        """Return the logged errors that no expectation covers."""
        return [error for error in self.errors
                if not any(pattern.search(error) for pattern in self.expected)]


@pytest.fixture
def watch(live) -> Watch:
    """Return the record of the test's requests and console errors."""
    return Watch(origin=live.url)


CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Remember whether the test itself failed, so `page` does not fail it a second time."""
    report = yield
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def watched_page(chromium, live, watch: Watch):
    """Return a page in a fresh context whose requests and console errors `watch` records."""
    context = chromium.new_context(base_url=live.url, accept_downloads=True,
                                   timezone_id="UTC", locale="en-US")
    context.set_default_timeout(TIMEOUT_MS)

    def route(route):
        url = route.request.url
        watch.requests.append(url)
        if _origin(url) == watch.origin or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            watch.outside.append(url)
            route.abort("blockedbyclient")

    context.route("**/*", route)
    page = context.new_page()
    page.on("console", lambda message: watch.errors.append(
        f"{message.text} ({message.location.get('url', '')})") if message.type == "error"
        else None)
    page.on("pageerror", lambda error: watch.errors.append(f"uncaught: {error}"))
    return page


@pytest.fixture
def open_page(request, chromium, live, watch):
    """Return a maker of pages, each in a browser context of its own (another user's browser).

    The test fails when any of them asked another host for anything or logged an error.
    """
    pages = []

    def open_one():
        pages.append(watched_page(chromium, live, watch))
        return pages[-1]

    yield open_one
    for page in pages:
        page.context.close()
    problems = ([f"asked another host for {url}" for url in watch.outside]
                + [f"logged an error: {error}" for error in watch.unexpected_errors()])
    if problems and not request.node.stash.get(CALL_FAILED, False):
        pytest.fail("the browser's page " + "; ".join(problems))
    for problem in problems:
        print(f"the browser's page {problem}")


@pytest.fixture
def page(open_page):
    """Return a page on the live server in a fresh context (see `open_page`)."""
    return open_page()


def sign_in(page, seeded: Seeded, role: Role, password: str = PASSWORD, *,
            org: str | None = None, username: str | None = None) -> None:
    """Sign in through the console's form, by its labels, as the seeded user with `role`.

    The seeded desk users then type their authenticator's code at the second step; another
    user (`username`) is left wherever the password led.
    """
    page.goto("/console/login")
    page.get_by_label("Organisation").fill(org or seeded.org)
    page.get_by_label("Username").fill(username or seeded.usernames[role])
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    if username is None and urlsplit(page.url).path == SECOND_STEP:
        second_step(page, seeded, role)


def second_step(page, seeded: Seeded, role: Role) -> None:
    """Type the seeded user's current code at the sign-in's second step."""
    page.get_by_label("Code").fill(seeded.authenticators[role].next_code())
    page.get_by_role("button", name="Verify").click()
    page.wait_for_load_state()


@functools.cache
def _axe_source() -> str:
    return AXE_SCRIPT.read_text()


def axe_problems(page) -> str:
    """Run axe-core on the page; return its serious and critical violations, readably."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        # Evaluated over the DevTools protocol, which the page's CSP does not govern.
        page.evaluate(_axe_source())
    results = page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
    blocking = [v for v in results["violations"] if v["impact"] in BLOCKING]
    return (f"axe on {page.url}:\n" + "\n".join(map(_readable, blocking))) if blocking else ""


def axe(page) -> None:
    """Fail on any serious or critical axe-core violation on the page, listing each."""
    problems = axe_problems(page)
    assert not problems, problems


def _readable(violation: dict) -> str:
    nodes = "\n".join(f"    at {json.dumps(node['target'])}: "
                      + node.get("failureSummary", "").replace("\n", " ")
                      for node in violation["nodes"][:5])
    more = len(violation["nodes"]) - 5
    return (f"  [{violation['impact']}] {violation['id']}: {violation['help']} "
            f"({violation['helpUrl']})\n{nodes}" + (f"\n    … and {more} more" if more > 0 else ""))


def menu_links(page) -> list[tuple[str, str]]:
    """Return the console menu's links on the current page: (label, path)."""
    return page.locator("nav[aria-label='Console pages'] a").evaluate_all(
        "links => links.map(a => [a.textContent.trim(), a.getAttribute('href')])")

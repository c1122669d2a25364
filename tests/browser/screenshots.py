"""Save screenshots of the console's main pages: `python -m tests.browser.screenshots docs/console`.

It serves a simulated organisation (`vigil simulate`: nurses and their peers, visits, doses,
wastes, custody and the flags the scanner raised) on a temporary SQLite database, signs in
as each desk role through the form, and saves full-page PNGs: a flag with its timeline, a
nurse's page with her peer charts, a bag's reconciliation. A page not built yet is skipped
with a message. Needs Debian's chromium (or VIGIL_CHROMIUM) and Playwright.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from playwright.sync_api import Page, sync_playwright
from sqlalchemy import select

from backend import boundary, config, schema, simulate
from backend.accounts import service as accounts
from backend.accounts.models import Role
from backend.db import build_engine
from backend.flags.models import Flag
from tests.browser.live import LiveServer
from tests.factories import PASSWORD

SIMULATION = simulate.Params("riverside", nurses=8, patients=12, days=21, seed=7)
CHROMIUM = os.environ.get("VIGIL_CHROMIUM", "/usr/bin/chromium")
VIEWPORT = {"width": 1280, "height": 900}


class Skipped(Exception):
    """A page the console does not have yet, or nothing on it to show."""


def _simulated(server: LiveServer) -> None:
    """Simulate the organisation, then give it desk users who can sign in."""
    app = server.app
    sessions, runtime = app.extensions["vigil.db"].sessions, app.extensions["vigil.runtime"]
    truth = simulate.generate(sessions, runtime, Path(app.instance_path), SIMULATION,
                              progress=print)
    # The console looks at the organisation the morning after its last simulated day.
    server.clock.set(truth.ended_at + timedelta(hours=6))
    with boundary.unit(sessions, runtime) as session:
        org = accounts.organisation_by_slug(session, SIMULATION.slug)
        for role in (Role.ADMIN, Role.PHARMACIST, Role.COMPLIANCE):
            accounts.create_user(session, runtime, None, organisation_id=org.id,
                                 username=f"desk-{role.value}", role=role, password=PASSWORD,
                                 display_name=f"Desk {role.value.title()}")


def _sign_in(page: Page, role: Role) -> None:
    page.goto("/console/login")
    page.get_by_label("Organisation").fill(SIMULATION.slug)
    page.get_by_label("Username").fill(f"desk-{role.value}")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    if "/console/login" in page.url:
        raise Skipped(f"could not sign in as desk-{role.value}")


def _open(page: Page, path: str) -> None:
    answer = page.goto(path)
    if answer is None or answer.status != 200:
        raise Skipped(f"{path} answered {answer and answer.status}")


def _first_link(page: Page, prefix: str) -> str:
    links = page.locator(f"main a[href^='{prefix}']")
    if links.count() == 0:
        raise Skipped(f"no link to {prefix}… on {page.url}")
    return links.first.get_attribute("href")


def _flags(server: LiveServer) -> list[Flag]:
    # A nurse's flags first, live before shadow, oldest first: the ones with the most to show.
    with server.app.extensions["vigil.db"].sessions() as session:
        return list(session.scalars(select(Flag).order_by(
            Flag.nurse_id.is_(None), Flag.shadow, Flag.first_seen_at, Flag.id)))


def flag_with_timeline(page: Page, server: LiveServer) -> None:
    """A nurse's flag: its rule, evidence timeline and review."""
    flags = _flags(server)
    if not flags:
        raise Skipped("the simulation raised no flags")
    _sign_in(page, Role.COMPLIANCE)
    _open(page, f"/console/flags/{flags[0].id}")


def nurse_with_peer_charts(page: Page, server: LiveServer) -> None:
    """A nurse's page: her flags and her figures against her peers'."""
    flagged = [flag.nurse_id for flag in _flags(server) if flag.nurse_id]
    if not flagged:
        raise Skipped("the simulation flagged no nurse")
    _sign_in(page, Role.COMPLIANCE)
    _open(page, f"/console/nurses/{flagged[0]}")


def bag_reconciliation(page: Page, server: LiveServer) -> None:
    """A nurse's bag over a shift: dispensed = administered + wasted + returned.

    The last simulated days, newest first: a shift whose bag differs if there is one.
    """
    _sign_in(page, Role.PHARMACIST)
    last = SIMULATION.start + timedelta(days=SIMULATION.days - 1)
    found = None
    for back in range(14):
        _open(page, f"/console/bags?day={last - timedelta(days=back)}")
        differing = page.locator("main section", has=page.locator("tr.differs"))
        shifts = differing if differing.count() else page.locator("main section")
        if shifts.count():
            found = shifts.first.locator("h3 a").get_attribute("href")
            if differing.count():
                break
    if found is None:
        raise Skipped("no nurse had a shift in the last two simulated weeks")
    _open(page, found)


SHOTS: dict[str, Callable[[Page, LiveServer], None]] = {
    "flag.png": flag_with_timeline,
    "nurse.png": nurse_with_peer_charts,
    "bag.png": bag_reconciliation,
}


def main(argv: list[str] | None = None) -> int:
    """Serve a simulated organisation and save each page's screenshot into the folder given."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where the PNGs go, e.g. docs/console")
    folder = parser.parse_args(argv).folder
    folder.mkdir(parents=True, exist_ok=True)
    for setting in config.SETTINGS:
        os.environ.pop(setting.env, None)
    with tempfile.TemporaryDirectory(prefix="vigil-screenshots-") as scratch:
        url = f"sqlite:///{Path(scratch) / 'vigil.sqlite3'}"
        engine = build_engine(url)
        schema.upgrade(engine)
        engine.dispose()
        server = LiveServer.on(url, Path(scratch))
        _simulated(server)
        server.start()
        try:
            _shoot(server, folder)
        finally:
            server.stop()
    return 0


def _shoot(server: LiveServer, folder: Path) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        for name, show in SHOTS.items():
            context = browser.new_context(base_url=server.url, viewport=VIEWPORT,
                                          timezone_id="UTC", locale="en-US")
            page = context.new_page()
            try:
                show(page, server)
                page.screenshot(path=folder / name, full_page=True)
                print(f"saved {folder / name} ({page.url.removeprefix(server.url)})")
            except Skipped as reason:
                print(f"skipped {name}: {reason}")
            finally:
                context.close()
        browser.close()


if __name__ == "__main__":
    sys.exit(main())

"""Every page in each desk role's menu, and one page of each kind its pages link to, opens,
has one h1, passes axe, and asks no other host."""

from __future__ import annotations

import re

import pytest

from backend.accounts.models import Role
from tests.browser.conftest import axe_problems, menu_links, sign_in
from tests.browser.live import DESK_ROLES

CURRENT = "nav[aria-label='Console pages'] a[aria-current='page']"
# A path segment that names one object (a UUID, a rule id, a day) rather than a kind of page.
NAMES_ONE = re.compile(r"/[^/]*[0-9.][^/]*")


def _problems(page, label: str, path: str, links: list[tuple[str, str]], *,
              in_menu: bool) -> list[str]:
    answer = page.goto(path)
    if answer.status != 200:
        return [f"{label} ({path}) answered {answer.status}"]
    found = []
    if (headings := page.locator("h1").count()) != 1:
        found.append(f"{label} ({path}) has {headings} h1 headings")
    if in_menu and page.locator(CURRENT).all_text_contents() != [label]:
        found.append(f"{label} ({path}) is not the menu's current page")
    # Each page's menu is the role's, the same everywhere.
    if menu_links(page) != links:
        found.append(f"{label} ({path}) shows another menu: {menu_links(page)}")
    return found + [problem for problem in [axe_problems(page)] if problem]


def _kind(path: str) -> str:
    return NAMES_ONE.sub("/*", path.split("?")[0].split("#")[0])


def _details(page, seen: set[str]) -> list[str]:
    """Return the first link of each kind of page the current page links to, not seen yet."""
    found = []
    hrefs = page.locator("main a[href^='/console/']").evaluate_all(
        "links => links.map(a => a.getAttribute('href'))")
    for href in hrefs:
        kind = _kind(href)
        if kind not in seen and not kind.endswith(".csv"):
            seen.add(kind)
            found.append(href)
    return found


@pytest.mark.parametrize("role", DESK_ROLES, ids=[role.value for role in DESK_ROLES])
def test_every_page_of_the_menu_and_its_links_opens_and_passes_axe(page, seeded, role: Role):
    sign_in(page, seeded, role)
    links = menu_links(page)
    assert links, f"the {role} role's menu is empty"
    seen = {_kind(path) for _, path in links}
    problems, details = [], []
    for label, path in links:
        problems += _problems(page, label, path, links, in_menu=True)
        details += [(label, href) for href in _details(page, seen)]
    for label, href in details:
        problems += _problems(page, f"a page linked from {label}", href, links, in_menu=False)
    assert not problems, "\n".join(problems)

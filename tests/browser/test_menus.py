"""Every page in each desk role's menu opens, has one h1, passes axe, and asks no other host."""

from __future__ import annotations

import pytest

from backend.accounts.models import Role
from tests.browser.conftest import axe_problems, menu_links, sign_in
from tests.browser.live import DESK_ROLES

CURRENT = "nav[aria-label='Console pages'] a[aria-current='page']"


def _problems(page, label: str, path: str, links: list[tuple[str, str]]) -> list[str]:
    answer = page.goto(path)
    if answer.status != 200:
        return [f"{label} ({path}) answered {answer.status}"]
    found = []
    if (headings := page.locator("h1").count()) != 1:
        found.append(f"{label} ({path}) has {headings} h1 headings")
    if page.locator(CURRENT).all_text_contents() != [label]:
        found.append(f"{label} ({path}) is not the menu's current page")
    # Each page's menu is the role's, the same everywhere.
    if menu_links(page) != links:
        found.append(f"{label} ({path}) shows another menu: {menu_links(page)}")
    return found + [problem for problem in [axe_problems(page)] if problem]


@pytest.mark.parametrize("role", DESK_ROLES, ids=[role.value for role in DESK_ROLES])
def test_every_page_of_the_menu_opens_and_passes_axe(page, seeded, role: Role):
    sign_in(page, seeded, role)
    links = menu_links(page)
    assert links, f"the {role} role's menu is empty"
    problems = [problem for label, path in links
                for problem in _problems(page, label, path, links)]
    assert not problems, "\n".join(problems)

"""The watch every browser test carries: it sees a request to another host and a violation
of the console's Content-Security-Policy, so a page that needs the network fails its test."""

from __future__ import annotations

import pytest

from tests.browser.conftest import Watch, expect, watched_page


@pytest.fixture
def watched(chromium, live):
    """Yield a page with a watch of its own, which this test reads instead of failing on."""
    watch = Watch(origin=live.url)
    page = watched_page(chromium, live, watch)
    yield page, watch
    page.context.close()


def test_a_request_to_another_host_is_refused_and_recorded(watched):
    page, watch = watched
    with pytest.raises(Exception, match="ERR_BLOCKED_BY_CLIENT"):
        page.goto("https://cdn.example.com/htmx.min.js")
    assert watch.outside == ["https://cdn.example.com/htmx.min.js"]


def test_a_csp_violation_on_a_console_page_is_recorded_as_an_error(watched):
    page, watch = watched
    page.goto("/console/login")
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    assert watch.errors == []
    # What a template must never do: an inline script, and an image from another host.
    page.evaluate("""() => {
        const script = document.createElement('script');
        script.textContent = 'window.ran = true';
        document.body.append(script);
        document.body.insertAdjacentHTML('beforeend', '<img src="https://cdn.example.com/a.png">');
    }""")
    expect(page.locator("img[src^='https://cdn']")).to_have_count(1)
    page.wait_for_timeout(200)
    assert not page.evaluate("() => window.ran === true")
    violations = [error for error in watch.unexpected_errors()
                  if "Content Security Policy" in error]
    assert any("script-src" in error for error in violations), watch.errors
    assert any("img-src" in error for error in violations), watch.errors

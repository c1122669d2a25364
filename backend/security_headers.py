"""The security headers every response carries: API answers, errors, health and the docs alike.

Answers carry PHI (JSON and CSV): no cache may keep them, no browser may sniff them into
another type, frame them or send their address on as a referrer. An API answer is no page, so
its Content-Security-Policy allows nothing at all. The one page, Swagger UI at /api/v1/docs,
gets what it needs and no more, all of it from this origin: its scripts and stylesheet (vendored,
see backend/api.py), its one inline bootstrap script by hash, the inline styles the bundle sets,
its icons as data: images, and the spec and "try it out" calls. The console's pages
(`/console`) load scripts, styles and images from this origin only, inline none, and send their
address as a referrer to this origin alone (Flask-WTF's CSRF check over TLS reads it). A view
that sets its own Cache-Control keeps it (the vendored files, which hold no PHI, may be cached
for a year); every other answer is no-store. HSTS is sent only on a request that came over
TLS: at the WSGI server, or at a proxy trusted to say so (`TRUST_PROXY`, ProxyFix's
`X-Forwarded-Proto`); an untrusted client's header changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import re

from flask import Flask, Response, request

HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
API_POLICY = "default-src 'none'; frame-ancestors 'none'"
# The console's pages: scripts, styles and images from this origin only, no inline script or
# style (charts are SVG with presentation attributes), forms post only here.
CONSOLE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                  "connect-src 'self'; form-action 'self'; base-uri 'none'; "
                  "frame-ancestors 'none'")
CONSOLE_BLUEPRINT = "console"
DOCS_ENDPOINT = "api-docs.openapi_swagger_ui"
HSTS = "max-age=31536000; includeSubDomains"
INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def docs_policy(page: bytes) -> str:
    """Return the Swagger UI page's policy: this origin, and its inline script by hash."""
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
                      for script in INLINE_SCRIPT.findall(page))
    return (f"default-src 'none'; script-src 'self' {hashes}; "
            "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def secure(response: Response) -> Response:
    """Add the security headers to `response`."""
    response.headers.update(HEADERS)
    if request.endpoint == DOCS_ENDPOINT and response.status_code == 200:
        response.headers["Content-Security-Policy"] = docs_policy(response.get_data())
    elif request.blueprint == CONSOLE_BLUEPRINT:
        response.headers["Content-Security-Policy"] = CONSOLE_POLICY
        # CSRFProtect checks, over TLS, that a form came from a page of this origin: its
        # browser must say so, to this origin only.
        response.headers["Referrer-Policy"] = "same-origin"
    else:
        response.headers["Content-Security-Policy"] = API_POLICY
    response.headers.setdefault("Cache-Control", "no-store")
    if request.is_secure:
        response.headers["Strict-Transport-Security"] = HSTS
    return response


def init_app(app: Flask) -> None:
    """Send the security headers on every response of `app`."""
    app.after_request(secure)

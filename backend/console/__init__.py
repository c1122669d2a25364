"""The desk console at /console: server-rendered pages for pharmacists, compliance and admins.

Its cookie is Flask's signed session, kept to /console, `HttpOnly`, `SameSite=Strict`, and
`Secure` whenever the request came over TLS; it carries only a random session id (the server
keeps its hash, `console.models.ConsoleSession`) and the CSRF token that every form posts back
(Flask-WTF's CSRFProtect, checked on the console's posts only: the API takes bearer tokens,
which a browser never sends by itself).
"""

from __future__ import annotations

import hashlib
import hmac

from flask import Flask, request
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer

from backend.console.pages import blp, csrf


def derived_key(app: Flask, purpose: bytes) -> bytes:
    """Return a key for `purpose` derived from Vigil's token secret, never the secret itself."""
    return hmac.new(app.extensions["vigil.runtime"].keys.token_secret, purpose,
                    hashlib.sha256).digest()


class ConsoleCookie(SecureCookieSessionInterface):
    """Flask's signed cookie, signed with a key of its own and `Secure` over TLS."""

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        """Sign with a key of the cookie's own."""
        signer = {"key_derivation": self.key_derivation, "digest_method": self.digest_method}
        return URLSafeTimedSerializer(derived_key(app, b"vigil console cookie"), salt=self.salt,
                                      serializer=self.serializer, signer_kwargs=signer)

    def get_cookie_secure(self, app: Flask) -> bool:
        """Mark the cookie `Secure` on a request that came over TLS (or when configured)."""
        return request.is_secure or bool(app.config["SESSION_COOKIE_SECURE"])


def init_app(app: Flask) -> None:
    """Serve the console under /console on `app`."""
    # Each module's pages register on import.
    from backend.console import (  # noqa: F401
        account,
        admin,
        dea_forms,
        flags,
        oversight,
        people,
        records,
        signin,
        stock,
    )

    app.config.update(
        SESSION_COOKIE_NAME="vigil_console", SESSION_COOKIE_PATH="/console",
        SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict",
        # The token lives as long as the session; the session ends by idling or signing out.
        WTF_CSRF_CHECK_DEFAULT=False, WTF_CSRF_TIME_LIMIT=None,
        WTF_CSRF_SECRET_KEY=derived_key(app, b"vigil console csrf"))
    app.session_interface = ConsoleCookie()
    csrf.init_app(app)
    app.register_blueprint(blp)

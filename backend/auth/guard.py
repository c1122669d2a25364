"""Authenticate the bearer token and check the caller's role before a view runs."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import g, request

from backend import db
from backend.accounts.models import Role
from backend.api import Blueprint, error_response
from backend.auth import service
from backend.auth.caller import Caller
from backend.errors import Forbidden, Unauthenticated
from backend.runtime import runtime

View = TypeVar("View", bound=Callable[..., Any])


def requires(*roles: Role) -> Callable[[View], View]:
    """Let the view run only for an authenticated caller holding one of `roles`."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            caller = authenticate_request()
            if caller.role not in roles:
                raise Forbidden(f"The {caller.role} role may not do this.",
                                {"role": caller.role, "allowed": sorted(roles)})
            return view(*args, **kwargs)

        allowed = ", ".join(sorted(roles))
        # A status has one description: the view's own 403 refusals (`mfa_required`) join
        # the role check's, which would otherwise replace them.
        own = [response["description"] for response in getattr(view, "_apidoc", {})
               .get("response", {}).get("responses", {}).get(403, [])]
        documented = Blueprint.doc(**{"x-roles": sorted(roles), "responses": {
            "401": error_response("`unauthenticated`: no valid access token."),
            "403": error_response(" ".join([f"`forbidden`: allowed roles: {allowed}.", *own])),
        }})
        return documented(guarded)

    return decorate


def authenticate_request() -> Caller:
    """Return the caller of this request, authenticating its bearer token once."""
    if "caller" not in g:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("Send an access token as 'Authorization: Bearer <token>'.")
        g.caller = service.authenticate(db.session(), runtime(), token.strip(), client_address())
    return g.caller


def current_caller() -> Caller:
    """Return the caller that `requires` authenticated."""
    return g.caller


def client_address() -> str | None:
    """Return the client's address (behind ProxyFix when the proxy is trusted)."""
    return request.remote_addr


def request_origin() -> str:
    """Return the origin the request arrived at (its scheme per ProxyFix behind a trusted proxy)."""
    return request.host_url.rstrip("/")

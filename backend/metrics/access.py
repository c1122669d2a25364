"""Who may scrape `/metrics`: a configured network, the bearer token, or else only loopback."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping
from typing import Any

from flask import Request

from backend.errors import Forbidden, Unauthenticated

REFUSED = "Metrics are not available to this caller."


def _address(request: Request) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return None


def _has_token(request: Request, token: str | None) -> bool:
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode(), token.encode())


def _from_network(request: Request, config: Mapping[str, Any]) -> bool:
    address, networks = _address(request), config["METRICS_NETWORKS"]
    if address is None:
        return False
    if networks:
        return any(address in ipaddress.ip_network(network) for network in networks)
    # Nothing configured: this host only. A loopback request that names a forwarded client
    # came through a proxy the app does not trust, so it is not this host's own.
    forwarded = not config["TRUST_PROXY"] and "X-Forwarded-For" in request.headers
    return not config["METRICS_TOKEN"] and address.is_loopback and not forwarded


def require_scraper(request: Request, config: Mapping[str, Any]) -> None:
    """Refuse the request unless it comes from a scraper the settings admit."""
    if _has_token(request, config["METRICS_TOKEN"]) or _from_network(request, config):
        return
    if config["METRICS_TOKEN"]:
        raise Unauthenticated(REFUSED)
    raise Forbidden(REFUSED)

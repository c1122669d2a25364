"""Prometheus metrics: every request timed and counted, and `/metrics` for the scraper."""

from __future__ import annotations

import time

from flask import Flask, Response, g, request

from backend.metrics.registry import REQUEST_SECONDS, REQUESTS

# A method outside these is counted as "other", so a client cannot mint label values.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# A path that matched no route: its own text could carry ids, so it is never a label.
UNMATCHED = "unmatched"


def _start() -> None:
    g.metrics_started = time.perf_counter()


def _observe(response: Response) -> Response:
    route = request.url_rule.rule if request.url_rule else UNMATCHED
    method = request.method if request.method in METHODS else "other"
    REQUESTS.labels(route=route, method=method, status=str(response.status_code)).inc()
    started = g.pop("metrics_started", None)
    if started is not None:
        REQUEST_SECONDS.labels(route=route, method=method).observe(
            time.perf_counter() - started)
    return response


def init_app(app: Flask) -> None:
    """Count and time every request of `app`, and serve `/metrics` in its OpenAPI document."""
    from backend.metrics.resources import blp

    app.before_request(_start)
    app.after_request(_observe)
    # The Api that `backend.api.init_app` made: flask-smorest keeps it by its config prefix.
    app.extensions["flask-smorest"]["apis"][""]["ext_obj"].register_blueprint(blp)

"""`/metrics`: the Prometheus text exposition, for a scraper the settings admit."""

from __future__ import annotations

from flask import Response, current_app, request
from flask.views import MethodView
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from backend import db
from backend.api import Blueprint
from backend.metrics import access
from backend.metrics.database import DatabaseCollector
from backend.metrics.registry import exposition
from backend.runtime import runtime

blp = Blueprint("metrics", __name__, description=(
    "Prometheus metrics, outside /api/v1: requests, sync, flags, jobs and the ledger. Open to "
    "the networks in `VIGIL_METRICS_NETWORKS` and to `Authorization: Bearer` with "
    "`VIGIL_METRICS_TOKEN`; with neither set, to this host only."))

TEXT = {"description": "The Prometheus text format (version 0.0.4).",
        "content": {"text/plain": {"schema": {"type": "string", "maxLength": 10_000_000}}}}


@blp.route("/metrics")
class Metrics(MethodView):
    """The scrape endpoint."""

    @blp.doc(security=[{}, {"bearerAuth": []}], responses={"200": TEXT})
    @blp.refusal(401, "`unauthenticated`: a token is configured and the request does not carry it.")
    @blp.refusal(403, "`forbidden`: not from an admitted network, and no token is configured.")
    def get(self):
        """Return every metric, the ledger's and jobs' read from the database now."""
        access.require_scraper(request, current_app.config)
        body = exposition(DatabaseCollector(db.session(), runtime().clock.now()))
        return Response(body, content_type=CONTENT_TYPE_PLAIN_0_0_4)

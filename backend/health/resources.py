"""Liveness and readiness probes, outside /api/v1 and open to anyone (they carry no data)."""

from __future__ import annotations

from collections.abc import Collection

from flask import Flask, current_app
from flask.views import MethodView
from flask_smorest import Api

from backend import db
from backend.api import Blueprint
from backend.health import service
from backend.health.schemas import LivenessSchema, ReadinessSchema
from backend.runtime import runtime

# Where the app keeps the migration scripts' head revision(s), read once at startup.
HEADS = "vigil.schema_heads"

blp = Blueprint("health", __name__, description="Probes for a load balancer or orchestrator.")


@blp.route("/healthz")
class Liveness(MethodView):
    """Liveness: restart the process only when this fails."""

    @blp.doc(security=[])
    @blp.response(200, LivenessSchema)
    def get(self):
        """Answer 200 while the process serves requests; the database is not consulted."""
        return {"status": service.OK}


@blp.route("/readyz")
class Readiness(MethodView):
    """Readiness: send traffic only while this answers 200."""

    @blp.doc(security=[])
    @blp.response(200, ReadinessSchema)
    @blp.alt_response(503, schema=ReadinessSchema,
                      description="A check failed: the body names it (`failed`).")
    def get(self):
        """Answer 200 when the database answers at the code's schema and the keys are loaded."""
        readiness = service.check(db.session(), current_app.extensions[HEADS], runtime().keys)
        return readiness.answer(), 200 if readiness.ready else 503


def init_app(app: Flask, api: Api, heads: Collection[str]) -> None:
    """Serve the probes at the root, documented in `api`; `heads` are the scripts' heads."""
    app.extensions[HEADS] = frozenset(heads)
    api.register_blueprint(blp)

"""HTTP endpoints of WatermelonDB-compatible sync for the nurse's phone."""

from __future__ import annotations

import hashlib
from functools import partial

from flask import current_app, jsonify, request
from flask.views import MethodView
from sqlalchemy.exc import IntegrityError

from backend import boundary, changes, db
from backend.accounts.models import Role
from backend.api import Blueprint
from backend.auth.guard import current_caller, requires
from backend.errors import VigilError
from backend.metrics import committed
from backend.metrics.registry import SYNC_PULLS
from backend.runtime import runtime
from backend.sync import clock, pull, push, pushed, receipts
from backend.sync.schemas import (
    PullQuerySchema,
    PullSchema,
    PushBodySchema,
    PushHeadersSchema,
    PushQuerySchema,
    PushResultSchema,
    SyncHeadersSchema,
)
from backend.sync.tables import SCHEMA_VERSION

blp = Blueprint("sync", __name__, url_prefix="/sync", description=(
    "Offline sync for the nurse's phone, in the WatermelonDB sync protocol: a WatermelonDB app "
    "calls `synchronize()` with a `pullChanges` that GETs and a `pushChanges` that POSTs here. "
    "The tables and columns are in `docs/sync.md`. Cursors are numbers of one per-organisation "
    "change sequence, handed out in commit order, so no change is ever skipped."))


@blp.route("")
class Sync(MethodView):
    """Pull and push."""

    @requires(Role.NURSE)
    @blp.arguments(PullQuerySchema, location="query")
    @blp.arguments(SyncHeadersSchema, location="headers")
    @blp.response(200, PullSchema)
    @blp.refusal(410, "`sync_reset_required`: the cursor is older than deletions are kept; "
                 "pull from 0.")
    @blp.refusal(426, "`schema_too_old`: update the app.")
    def get(self, query, headers):
        """Pull what changed for this nurse since `last_pulled_at`.

        Her organisation's products, her assigned patients (PHI decrypted for her, the
        disclosure audited), their plan versions, visits and session records, and her own
        bag's custody entries. A patient she no longer looks after arrives as `deleted` with
        all its rows. Created and updated are told apart by the cursor.
        """
        session, rt, caller = db.session(), runtime(), current_caller()
        clock.observe(session, rt, caller, clock.parse(headers["device_time"]))
        migration = query["migration"]
        answer = pull.pull(session, rt, caller, pull.PullRequest(
            last_pulled_at=query["last_pulled_at"], schema_version=query["schema_version"],
            limit=query["limit"], migration=pull.Migration(
                from_version=migration["from"], tables=frozenset(migration["tables"]),
                columns={k: tuple(v) for k, v in migration["columns"].items()})
            if migration else None))
        committed.count(session, SYNC_PULLS)
        return answer

    @requires(Role.NURSE)
    @blp.arguments(PushQuerySchema, location="query")
    @blp.arguments(PushHeadersSchema, location="headers")
    @blp.doc(requestBody={"required": True,
                          "content": {"application/json": {"schema": PushBodySchema}}})
    @blp.response(200, PushResultSchema)
    @blp.refusal(400, "`malformed_push`: the table, record id and field; nothing applied.")
    @blp.refusal(409, "`sync_conflict`: a visit changed since the pull; pull and push again. "
                 "`push_in_progress`: the same key is still running.")
    @blp.refusal(413, "`push_too_large`: too many records or bytes.")
    @blp.refusal(422, "`idempotency_key_reused` with a different body.")
    def post(self, query, headers):
        """Push the phone's changes, applied in one transaction.

        Visits follow WatermelonDB's rule: one changed on the server since `last_pulled_at`
        refuses the whole push with 409. Append-only records (evv_events, pre_doses, doses,
        observations, discharges, outcome_scores, custody_entries) are created only and
        carry the phone's signature; an identical re-send changes nothing; a bad signature, a
        different record under an existing id, or a failed validation is quarantined with the
        reason and flagged, and the rest still applies. The pushed sessions are queued for
        the safeguards, which the `sync_checks` job runs within a minute.
        """
        session, rt, caller = db.session(), runtime(), current_caller()
        raw = request.get_data()
        schema_version = query["schema_version"] or SCHEMA_VERSION
        # Every push is logged before anything else, refused ones included, and its key is
        # claimed in a unit of its own, so a retry arriving meanwhile sees the claim at once.
        # Authentication only read: end that read, so no lock of it waits on the claim.
        session.rollback()
        boundary.begin(session)
        held = boundary.run_in_unit(
            current_app.extensions["vigil.db"].sessions, rt, partial(
                receipts.claim, rt=rt, caller=caller, key=headers["idempotency_key"],
                body_sha256=hashlib.sha256(raw).hexdigest(),
                last_pulled_at=query["last_pulled_at"], schema_version=schema_version))
        if isinstance(held, receipts.Replay):
            response = jsonify(held.body)
            response.status_code = held.status
            response.headers["Idempotent-Replayed"] = "true"
            return response
        try:
            parsed = pushed.parse(raw, query["last_pulled_at"], schema_version,
                                  current_app.config["SYNC_MAX_PUSH_RECORDS"])
            device_time = clock.parse(headers["device_time"])
            answer = push.apply(session, rt, caller, parsed)
            clock.observe(session, rt, caller, device_time)
            receipts.finish(session, rt, caller, held.push_id, 200, answer, {
                "applied": answer["applied"], "quarantined": len(answer["quarantined"])})
            # Written now, so that a record another push stored first is found here.
            session.flush()
        except IntegrityError:
            # Another push stored some of these records first: the retry finds them stored.
            error = push.ConcurrentPush("Another push from this phone stored some of these "
                                        "records at the same moment; push again.")
            changes.keep(session, partial(receipts.refused, rt=rt, caller=caller,
                                          push_id=held.push_id, error=error))
            raise error from None
        except VigilError as error:
            changes.keep(session, partial(receipts.refused, rt=rt, caller=caller,
                                          push_id=held.push_id, error=error))
            raise
        except Exception:
            changes.keep(session, partial(receipts.failed, rt=rt, push_id=held.push_id))
            raise
        return answer

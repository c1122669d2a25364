"""Readiness checks: the database answers, its schema is the code's, the keys are loaded."""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import asdict, dataclass

from alembic.runtime.migration import MigrationContext
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from backend.keys import KeyRing

log = logging.getLogger(__name__)

OK, FAILED, SKIPPED = "ok", "failed", "skipped"


@dataclass(frozen=True)
class Readiness:
    """The outcome of each readiness check."""

    database: str
    schema: str
    keys: str

    @property
    def ready(self) -> bool:
        """Tell whether every check passed."""
        return all(outcome == OK for outcome in asdict(self).values())

    def answer(self) -> dict:
        """Return the readiness body."""
        return {"status": "ready" if self.ready else "not_ready", "checks": asdict(self)}


def keys_loaded(keys: KeyRing | None) -> bool:
    """Tell whether every key the server needs is present in `keys`."""
    return bool(keys and keys.token_secret and keys.signing_key and keys.blind_index_key
                and keys.phi_keys.get(keys.phi_active))


def check(session: Session, heads: Collection[str], keys: KeyRing | None) -> Readiness:
    """Run the readiness checks against `session`'s database, the script `heads` and `keys`."""
    keys_outcome = OK if keys_loaded(keys) else FAILED
    try:
        revisions = MigrationContext.configure(session.connection()).get_current_heads()
    except SQLAlchemyError as exc:
        # The exception's text may carry the database URL: only its kind is logged.
        log.warning("readiness: database unreachable (%s)", type(exc).__name__)
        return Readiness(database=FAILED, schema=SKIPPED, keys=keys_outcome)
    schema = OK if set(revisions) == set(heads) else FAILED
    return Readiness(database=OK, schema=schema, keys=keys_outcome)

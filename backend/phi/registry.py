"""Which columns hold PHI ciphertext, so that key rotation and status know every one of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backend.phi.cipher import Place


@dataclass(frozen=True)
class EncryptedColumns:
    """A model whose `<name>_enc` columns hold values bound to (organisation, table, name, row)."""

    # A mapped class with `id` and `organisation_id` columns: both are part of a value's place.
    model: Any
    names: tuple[str, ...]

    @property
    def table(self) -> str:
        """Return the model's table name."""
        return self.model.__tablename__

    @staticmethod
    def attribute(name: str) -> str:
        """Return the attribute that stores the ciphertext of `name`."""
        return f"{name}_enc"

    def place(self, row: Any, name: str) -> Place:
        """Return the place the value of `name` in `row` is bound to."""
        return Place(row.organisation_id, self.table, name, row.id)


def encrypted_columns() -> tuple[EncryptedColumns, ...]:
    """Return every model's encrypted columns; a feature that stores PHI adds its line here."""
    from backend.administration import models as clinical
    from backend.custody.models import CUSTODY_ENTRY_PHI, LOSS_REPORT_PHI
    from backend.flags.models import FLAG_EVENT_PHI, FLAG_PHI
    from backend.mfa.models import SECOND_FACTOR_SECRETS
    from backend.patients.models import PATIENT_PHI
    from backend.plans.models import PLAN_VERSION_PHI
    from backend.visits.models import EVV_PHI, VISIT_PHI

    return (PATIENT_PHI, clinical.PRE_DOSE_PHI, clinical.DOSE_PHI, clinical.OBSERVATION_PHI,
            clinical.DISCHARGE_PHI, clinical.OUTCOME_PHI, clinical.QUARANTINE_PHI, EVV_PHI,
            VISIT_PHI, PLAN_VERSION_PHI, CUSTODY_ENTRY_PHI, LOSS_REPORT_PHI, FLAG_PHI,
            FLAG_EVENT_PHI, SECOND_FACTOR_SECRETS)

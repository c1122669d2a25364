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
    from backend.administration.models import DISCHARGE_PHI
    from backend.patients.models import PATIENT_PHI

    return (PATIENT_PHI, DISCHARGE_PHI)

"""Facts grouped the ways rules look them up: doses by patient and by visit, waste by visit."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # facts.py imports the monitoring rules' SessionFacts: a runtime import would be circular.
    from safeguards.facts import Dose, Facts


def doses_by_patient(facts: Facts) -> dict[str, list[Dose]]:
    """Return each patient's doses in the order given."""
    doses: dict[str, list[Dose]] = defaultdict(list)
    for dose in sorted(facts.doses, key=lambda dose: (dose.given_at, dose.id)):
        doses[dose.patient_id].append(dose)
    return doses


def doses_by_visit(facts: Facts) -> dict[str, list[Dose]]:
    """Return the doses recorded at each visit."""
    doses: dict[str, list[Dose]] = defaultdict(list)
    for dose in facts.doses:
        if dose.visit_id is not None:
            doses[dose.visit_id].append(dose)
    return doses


def wasted_by_visit(facts: Facts) -> dict[str, int]:
    """Return the micrograms wasted at each visit."""
    wasted: dict[str, int] = defaultdict(int)
    for waste in facts.wastes:
        if waste.visit_id is not None:
            wasted[waste.visit_id] += waste.quantity_ug
    return wasted

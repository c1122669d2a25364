"""Facts looked up the ways rules need them: by patient, by visit, and each plan's policy."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from functools import cache, partial

from safeguards.facts import Dose, Facts
from safeguards.policy import Policy


def plan_policies(facts: Facts, policy: Policy) -> Callable[[str | None], Policy]:
    """Return each plan version's policy by its id, each built once however often asked."""
    # A scan meets the same few plans on a million doses; layering overrides is not free.
    return cache(partial(facts.policy_for, policy))


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

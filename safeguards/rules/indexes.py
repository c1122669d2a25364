"""Facts looked up the ways rules need them: by patient, by visit, and each plan's policy."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial

from safeguards.facts import Dose, DoseSeries, DoseTally, Facts, SeriesDose
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


def dose_series(facts: Facts) -> tuple[DoseSeries, ...]:
    """Return each patient's dose series: the loader's summary, else every dose one by one."""
    if facts.dose_series is not None:
        return facts.dose_series
    return tuple(
        DoseSeries(patient_id, len(doses), tuple(
            SeriesDose(id=dose.id, nurse_id=dose.nurse_id, plan_version_id=dose.plan_version_id,
                       given_at=dose.given_at, quantity_ug=dose.quantity_ug,
                       ug_per_kg=dose.ug_per_kg, planned_ug=dose.planned_ug)
            for dose in doses))
        for patient_id, doses in doses_by_patient(facts).items())


@dataclass(frozen=True)
class Kept:
    """A patient's doses of one kind: the latest apart, and each earlier figure with its count."""

    recent: list[SeriesDose]
    earlier: list[tuple[SeriesDose | DoseTally, int]]

    @property
    def count(self) -> int:
        """Return how many doses of the kind the patient had."""
        return len(self.recent) + sum(count for _, count in self.earlier)


def kept(series: DoseSeries, keep: Callable[[SeriesDose | DoseTally], bool],
         recent: int) -> Kept:
    """Return the series' doses that `keep` keeps, the last `recent` of them apart."""
    if recent > series.tail and series.earlier:
        # The loader tallied doses a trend would need one by one: a wrong tail, not a finding.
        raise ValueError(f"{recent} recent doses asked of a series that keeps {series.tail}")
    latest = [dose for dose in series.latest if keep(dose)]
    cut = max(len(latest) - recent, 0)
    return Kept(latest[cut:], [(dose, 1) for dose in latest[:cut]]
                + [(tally, tally.doses) for tally in series.earlier if keep(tally)])


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

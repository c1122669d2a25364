"""Rule thresholds: defaults from the literature, overridden by an organisation, then a plan."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

Number = int | Decimal


class UnknownThreshold(LookupError):
    """No threshold has this name."""


def _checked(name: str, value: object, decimal: bool) -> Number:
    # Floats would turn 0.1 mg/kg into 0.1000000000000000055…; limits stay exact.
    if isinstance(value, bool) or not isinstance(value, Number):
        raise TypeError(f"{name} must be an int or a Decimal, not {type(value).__name__}")
    if not decimal and isinstance(value, Decimal):
        # Counts, minutes and metres feed timedelta and ranges, which take whole numbers.
        raise TypeError(f"{name} is a whole number; {value} is a Decimal")
    if isinstance(value, Decimal) and not value.is_finite():
        raise ValueError(f"{name} must be a finite number, not {value}")
    if value < 0:
        raise ValueError(f"{name} cannot be negative ({value})")
    return Decimal(value) if decimal else value


@dataclass(frozen=True)
class Threshold:
    """A named limit: its default, its unit, and where the default comes from."""

    name: str
    default: Number
    unit: str
    source: str
    # Common practice rather than a published rule: documentation must say it is a choice.
    practice: bool = False

    def __post_init__(self) -> None:
        _checked(self.name, self.default, isinstance(self.default, Decimal))

    def accept(self, value: object) -> Number:
        """Return `value` as this threshold's kind of number, or refuse it."""
        return _checked(self.name, value, isinstance(self.default, Decimal))


DEFAULT_THRESHOLDS: tuple[Threshold, ...] = (
    Threshold("min_interval_hours", 48, "h",
              "CLINICAL.md Frequency: twice-weekly start, Krystal et al. 2019 (Neuron 101:774)"),
    Threshold("bp_hold_systolic", 140, "mmHg",
              "CLINICAL.md Monitoring: pre-dose hold above 140 systolic", practice=True),
    Threshold("bp_hold_diastolic", 90, "mmHg",
              "CLINICAL.md Monitoring: pre-dose hold above 90 diastolic", practice=True),
    Threshold("monitoring_window_minutes", 120, "min",
              "CLINICAL.md Monitoring: at least 2 h after a dose, Spravato REMS"),
    Threshold("max_mg_per_kg_racemic_iv", Decimal("1.0"), "mg/kg",
              "CLINICAL.md Drugs: 1.0 mg/kg adds no benefit, Krystal et al. 2019; Fava 2017"),
    Threshold("evv_radius_m", 250, "m",
              "CLINICAL.md EVV: vendors allow 250 ft (HHAeXchange) to 1 mile (Sandata)",
              practice=True),
    Threshold("loss_notice_business_days", 1, "business days",
              "CLINICAL.md DEA: written notice of theft or significant loss, "
              "21 CFR 1301.76(b)"),
    Threshold("form_106_days", 45, "days",
              "CLINICAL.md DEA: DEA Form 106 after theft or loss, 21 CFR 1301.76(b)"),
    Threshold("induction_max_per_7_days", 2, "doses",
              "CLINICAL.md Frequency: induction at most 2 doses in any 7 days; twice weekly "
              "start, Krystal et al. 2019"),
    Threshold("induction_max_per_28_days", 8, "doses",
              "CLINICAL.md Frequency: twice weekly for the 4 induction weeks, Krystal et al. "
              "2019; Spravato label weeks 1-4", practice=True),
    Threshold("induction_weeks", 4, "weeks",
              "CLINICAL.md Frequency: Spravato label, twice weekly in weeks 1-4", practice=True),
    Threshold("maintenance_max_per_7_days", 1, "doses",
              "CLINICAL.md Frequency: maintenance at most 1 dose in 7 days"),
    Threshold("maintenance_max_per_28_days", 4, "doses",
              "CLINICAL.md Frequency: weekly in weeks 5-8, Spravato label", practice=True),
    Threshold("maintenance_weeks", 4, "weeks",
              "CLINICAL.md Frequency: Spravato label, weekly in weeks 5-8", practice=True),
    Threshold("taper_max_per_7_days", 1, "doses",
              "CLINICAL.md Frequency: taper gradually, Krystal et al. 2019", practice=True),
    Threshold("taper_max_per_28_days", 2, "doses",
              "CLINICAL.md Frequency: every 2 weeks from week 9 (Spravato label), toward "
              "monthly (Krystal et al. 2019)", practice=True),
    Threshold("visit_minutes", 180, "min",
              "CLINICAL.md: 40 min infusion (Krystal et al. 2019) + 2 h monitoring (Spravato "
              "REMS) + setting up", practice=True),
    Threshold("travel_buffer_minutes", 30, "min",
              "Vigil practice default (no published rule): time between two homes",
              practice=True),
    Threshold("missed_visit_grace_minutes", 60, "min",
              "Vigil practice default (no published rule): how late a check-in may be before "
              "the visit counts as missed", practice=True),
    Threshold("reminder_lead_hours", 24, "h",
              "Vigil practice default (no published rule): nurses are reminded the day before",
              practice=True),
    Threshold("bag_return_deadline_hours", 2, "h",
              "Vigil practice default (no published rule): a nurse's bag is back to zero this "
              "long after her last visit of the day; CLINICAL.md Diversion: dispense = "
              "administered + wasted + returned (Bluesight)", practice=True),
)


class Policy:
    """Thresholds with their defaults, and the overrides layered on them.

    An organisation's overrides come first and a treatment plan's go on top:
    `Policy().with_overrides(organisation).with_overrides(plan)`.
    """

    def __init__(self, thresholds: Iterable[Threshold] = DEFAULT_THRESHOLDS,
                 overrides: Mapping[str, object] | None = None) -> None:
        self._thresholds: dict[str, Threshold] = {}
        for threshold in thresholds:
            if threshold.name in self._thresholds:
                raise ValueError(f"threshold {threshold.name} is defined twice")
            self._thresholds[threshold.name] = threshold
        self._values: dict[str, Number] = {
            name: self.threshold(name).accept(value) for name, value in (overrides or {}).items()}

    def threshold(self, name: str) -> Threshold:
        """Return the threshold called `name`: its default, unit and source."""
        try:
            return self._thresholds[name]
        except KeyError:
            raise UnknownThreshold(f"no threshold {name!r}") from None

    def value(self, name: str) -> Number:
        """Return the value in force for `name`: the latest override, else the default."""
        return self._values.get(name, self.threshold(name).default)

    def thresholds(self) -> list[Threshold]:
        """Return every threshold, in declaration order."""
        return list(self._thresholds.values())

    def with_overrides(self, overrides: Mapping[str, object]) -> Policy:
        """Return a policy with `overrides` on top of this one's, which stays as it is."""
        return Policy(self._thresholds.values(), {**self._values, **overrides})

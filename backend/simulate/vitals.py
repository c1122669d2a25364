"""Plausible physiology of a ketamine session: vital signs, dissociation and sedation over time.

Shapes follow CLINICAL.md: blood pressure and dissociation peak about 40 min after an IV dose
begins and resolve within the 2 h monitoring window; the mean CADSS after IV ketamine is about
7.7 on the 23-item scale, so about 2-3 on the 6-item short form the nurses record, with a wide
spread; any MOAA/S drop is sedation. A few sessions carry a real blood-pressure rise of at least
+40 mmHg systolic (8-19% of patients in the label's trials), which the alarm rule is right to
flag: the simulator labels those as expected events.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

CADSS_SHORT_FORM = ("1", "2", "6", "7", "15", "22")
PEAK_MINUTES = 40
# Minutes for the effect to fall by a factor e after the peak: gone by about 100 min.
DECAY_MINUTES = 18
# Pre-dose and discharge readings stay under the practice hold of 140/90 unless a hold is meant.
HOLD_SYSTOLIC, HOLD_DIASTOLIC = 140, 90
# A labelled spike peaks high enough that the readings at 30 and 45 min, a quarter below
# the peak, still show the +40 mmHg rise.
ALARM_SYSTOLIC, SPIKE_RISE = 180, 60


@dataclass(frozen=True)
class Baseline:
    """A patient's resting readings and how strongly they react to ketamine."""

    systolic: int
    diastolic: int
    heart_rate: int
    respiratory_rate: int
    sensitivity: float


def _clip(value: float, low: int, high: int) -> int:
    return max(low, min(high, round(value)))


def baseline(rng: random.Random) -> Baseline:
    """Draw a patient's resting vitals and ketamine sensitivity."""
    systolic = _clip(rng.gauss(122, 8), 102, 136)
    return Baseline(systolic=systolic,
                    diastolic=_clip(rng.gauss(77, 5), 62, min(86, systolic - 25)),
                    heart_rate=_clip(rng.gauss(72, 7), 58, 96),
                    respiratory_rate=_clip(rng.gauss(15, 1.5), 12, 18),
                    sensitivity=rng.lognormvariate(0, 0.35))


def effect(minute: float) -> float:
    """Return the drug's effect at `minute` after the dose began, 0 to 1."""
    if minute <= 0:
        return 0.0
    if minute <= PEAK_MINUTES:
        return minute / PEAK_MINUTES
    return math.exp(-(minute - PEAK_MINUTES) / DECAY_MINUTES)


def cadss_items(rng: random.Random, total: int) -> dict[str, int]:
    """Spread a CADSS short-form total over its six items, each 0-4."""
    items = dict.fromkeys(CADSS_SHORT_FORM, 0)
    for _ in range(min(total, 24)):
        item = rng.choice([key for key, value in items.items() if value < 4])
        items[item] += 1
    return items


def resting(rng: random.Random, patient: Baseline, *, hold: bool = False) -> dict[str, int]:
    """Return pre-dose readings; `hold` puts the blood pressure just over the hold threshold."""
    systolic = _clip(patient.systolic + rng.gauss(0, 4), 98, HOLD_SYSTOLIC - 2)
    diastolic = _clip(patient.diastolic + rng.gauss(0, 3), 60, min(HOLD_DIASTOLIC - 2,
                                                                   systolic - 25))
    if hold:
        systolic = rng.randint(HOLD_SYSTOLIC + 2, HOLD_SYSTOLIC + 12)
    return {"systolic": systolic, "diastolic": diastolic,
            "heart_rate": _clip(patient.heart_rate + rng.gauss(0, 3), 55, 100),
            "spo2": rng.randint(96, 99),
            "respiratory_rate": _clip(patient.respiratory_rate + rng.gauss(0, 1), 12, 18),
            "moaas": 5, "cadss_items": cadss_items(rng, rng.choice((0, 0, 0, 1)))}


@dataclass(frozen=True)
class Response:
    """How one session's dose acts: peak dissociation, peak blood-pressure rise."""

    peak_cadss: int
    peak_rise: int

    def at(self, rng: random.Random, before: dict[str, int], minute: float) -> dict[str, object]:
        """Return readings at `minute` after the dose began, from the pre-dose `before`."""
        level = effect(minute)
        rise = self.peak_rise * level
        cadss = round(self.peak_cadss * level + rng.random() * 0.8)
        sedated = level > 0.6 and self.peak_cadss >= 10 and rng.random() < 0.5
        # Without a labelled spike the reading stays under the alarm: honest means unremarkable.
        ceiling = 230 if self.peak_rise >= SPIKE_RISE else ALARM_SYSTOLIC - 4
        systolic = _clip(before["systolic"] + rise + rng.gauss(0, 3), 90, ceiling)
        return {"systolic": systolic,
                "diastolic": _clip(before["diastolic"] + rise * 0.6 + rng.gauss(0, 2), 55,
                                   systolic - 25),
                "heart_rate": _clip(before["heart_rate"] + 9 * level + rng.gauss(0, 2), 55, 115),
                "spo2": rng.randint(95, 99),
                "respiratory_rate": _clip(before["respiratory_rate"] + rng.gauss(0, 1), 12, 20),
                "moaas": 4 if sedated else 5, "cadss_items": cadss_items(rng, cadss)}


def response(rng: random.Random, patient: Baseline, ug_per_kg: int, *,
             spike: bool = False) -> Response:
    """Draw a session's response to `ug_per_kg`; `spike` makes it a ≥ +40 mmHg rise."""
    intensity = patient.sensitivity * ug_per_kg / 500
    peak_cadss = _clip(rng.lognormvariate(math.log(4), 0.5) * intensity, 0, 20)
    rise = rng.randint(SPIKE_RISE, 72) if spike else _clip(rng.gauss(12, 4) * intensity, 2, 28)
    return Response(peak_cadss, rise)


def discharge(rng: random.Random, before: dict[str, int]) -> dict[str, object]:
    """Return readings at discharge: back to the pre-dose state and under the hold."""
    systolic = min(before["systolic"] + rng.randint(-4, 3), HOLD_SYSTOLIC - 2)
    return {"systolic": systolic,
            "diastolic": min(before["diastolic"] + rng.randint(-3, 2), HOLD_DIASTOLIC - 2,
                             systolic - 25),
            "heart_rate": before["heart_rate"] + rng.randint(-2, 4), "spo2": rng.randint(96, 99),
            "respiratory_rate": before["respiratory_rate"], "moaas": 5,
            "cadss_items": cadss_items(rng, rng.choice((0, 0, 1)))}


def phq9(rng: random.Random, total: int) -> dict[str, int]:
    """Spread a PHQ-9 total over its nine items, each 0-3."""
    items = {str(number): 0 for number in range(1, 10)}
    for _ in range(min(max(total, 0), 27)):
        item = rng.choice([key for key, value in items.items() if value < 3])
        items[item] += 1
    return items

"""Rule thresholds: defaults from the literature, overridden by an organisation, then a plan."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
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
    """A named limit: its default, its unit, where the default comes from, and its bounds.

    `minimum` and `maximum` are the values an organisation or a plan may set: beyond them a
    value is a slip of the keyboard or switches the rule off (an EVV radius of 2,147,483,647
    m passes every check-in). They come from CLINICAL.md where it speaks (a mile for EVV,
    45 days for DEA Form 106, monitoring past the 40 min blood-pressure peak), else from
    common sense.
    """

    name: str
    default: Number
    unit: str
    source: str
    # Common practice rather than a published rule: documentation must say it is a choice.
    practice: bool = False
    minimum: Number = field(kw_only=True)
    maximum: Number = field(kw_only=True)

    def __post_init__(self) -> None:
        decimal = isinstance(self.default, Decimal)
        low, default, high = (_checked(self.name, number, decimal)
                              for number in (self.minimum, self.default, self.maximum))
        if not low <= default <= high:
            raise ValueError(f"{self.name}: the default {self.default} is outside "
                             f"{self.minimum}..{self.maximum}")

    def accept(self, value: object) -> Number:
        """Return `value` as this threshold's kind of number, or refuse it."""
        number = _checked(self.name, value, isinstance(self.default, Decimal))
        if not self.minimum <= number <= self.maximum:
            raise ValueError(f"{self.name} must be between {self.minimum} and {self.maximum} "
                             f"{self.unit}, not {number}")
        return number

    def clamped(self, value: Number) -> Number:
        """Return `value` brought within this threshold's bounds."""
        return min(max(value, self.minimum), self.maximum)


DEFAULT_THRESHOLDS: tuple[Threshold, ...] = (
    Threshold("min_interval_hours", 48, "h",
              "CLINICAL.md Frequency: twice-weekly start, Krystal et al. 2019 (Neuron 101:774)",
              minimum=24, maximum=2160),
    Threshold("bp_hold_systolic", 140, "mmHg",
              "CLINICAL.md Monitoring: pre-dose hold above 140 systolic",
              minimum=100, maximum=200, practice=True),
    Threshold("bp_hold_diastolic", 90, "mmHg",
              "CLINICAL.md Monitoring: pre-dose hold above 90 diastolic",
              minimum=60, maximum=130, practice=True),
    Threshold("monitoring_window_minutes", 120, "min",
              "CLINICAL.md Monitoring: at least 2 h after a dose, Spravato REMS",
              minimum=60, maximum=480),
    Threshold("max_mg_per_kg_racemic_iv", Decimal("1.0"), "mg/kg",
              "CLINICAL.md Drugs: 1.0 mg/kg adds no benefit, Krystal et al. 2019; Fava 2017",
              minimum=Decimal("0.1"), maximum=Decimal("2.0")),
    Threshold("evv_radius_m", 250, "m",
              "CLINICAL.md EVV: vendors allow 250 ft (HHAeXchange) to 1 mile (Sandata)",
              minimum=50, maximum=1609, practice=True),
    Threshold("loss_notice_business_days", 1, "business days",
              "CLINICAL.md DEA: written notice of theft or significant loss, "
              "21 CFR 1301.76(b)",
              minimum=1, maximum=1),
    Threshold("form_106_days", 45, "days",
              "CLINICAL.md DEA: DEA Form 106 after theft or loss, 21 CFR 1301.76(b)",
              minimum=1, maximum=45),
    Threshold("induction_max_per_7_days", 2, "doses",
              "CLINICAL.md Frequency: induction at most 2 doses in any 7 days; twice weekly "
              "start, Krystal et al. 2019",
              minimum=1, maximum=3),
    Threshold("induction_max_per_28_days", 8, "doses",
              "CLINICAL.md Frequency: twice weekly for the 4 induction weeks, Krystal et al. "
              "2019; Spravato label weeks 1-4",
              minimum=1, maximum=12, practice=True),
    Threshold("induction_weeks", 4, "weeks",
              "CLINICAL.md Frequency: Spravato label, twice weekly in weeks 1-4",
              minimum=1, maximum=52, practice=True),
    Threshold("maintenance_max_per_7_days", 1, "doses",
              "CLINICAL.md Frequency: maintenance at most 1 dose in 7 days",
              minimum=1, maximum=3),
    Threshold("maintenance_max_per_28_days", 4, "doses",
              "CLINICAL.md Frequency: weekly in weeks 5-8, Spravato label",
              minimum=1, maximum=12, practice=True),
    Threshold("maintenance_weeks", 4, "weeks",
              "CLINICAL.md Frequency: Spravato label, weekly in weeks 5-8",
              minimum=1, maximum=52, practice=True),
    Threshold("taper_max_per_7_days", 1, "doses",
              "CLINICAL.md Frequency: taper gradually, Krystal et al. 2019",
              minimum=1, maximum=3, practice=True),
    Threshold("taper_max_per_28_days", 2, "doses",
              "CLINICAL.md Frequency: every 2 weeks from week 9 (Spravato label), toward "
              "monthly (Krystal et al. 2019)",
              minimum=1, maximum=12, practice=True),
    Threshold("visit_minutes", 180, "min",
              "CLINICAL.md: 40 min infusion (Krystal et al. 2019) + 2 h monitoring (Spravato "
              "REMS) + setting up",
              minimum=60, maximum=480, practice=True),
    Threshold("travel_buffer_minutes", 30, "min",
              "Vigil practice default (no published rule): time between two homes",
              minimum=0, maximum=240, practice=True),
    Threshold("missed_visit_grace_minutes", 60, "min",
              "Vigil practice default (no published rule): how late a check-in may be before "
              "the visit counts as missed",
              minimum=0, maximum=480, practice=True),
    Threshold("reminder_lead_hours", 24, "h",
              "Vigil practice default (no published rule): nurses are reminded the day before",
              minimum=1, maximum=168, practice=True),
    Threshold("bag_return_deadline_hours", 2, "h",
              "Vigil practice default (no published rule): a nurse's bag is back to zero this "
              "long after her last visit of the day; CLINICAL.md Diversion: dispense = "
              "administered + wasted + returned (Bluesight)",
              minimum=1, maximum=24, practice=True),
    Threshold("infusion_tolerance_minutes", 5, "min",
              "Vigil practice default (no published rule): how much shorter than the plan's "
              "infusion minutes an infusion may run; CLINICAL.md Drugs: 0.5 mg/kg over 40 min",
              minimum=0, maximum=60, practice=True),
    Threshold("cadss_discharge_delta", 4, "CADSS points",
              "Vigil practice default (no published rule): discharge CADSS total above the "
              "pre-dose total by more than this is unresolved dissociation; CLINICAL.md "
              "Monitoring: until dissociation resolves, Spravato REMS",
              minimum=0, maximum=92, practice=True),
    Threshold("observation_interval_minutes", 15, "min",
              "CLINICAL.md Monitoring: IV practice every 15 min after the dose, Emory series",
              minimum=0, maximum=60),
    Threshold("bp_peak_minutes", 40, "min",
              "CLINICAL.md Monitoring: blood pressure ~40 min after the dose (the peak), "
              "Spravato label",
              minimum=20, maximum=90),
    Threshold("bp_peak_tolerance_minutes", 10, "min",
              "Vigil practice default (no published rule): how far from the 40 min peak a "
              "blood-pressure reading still counts",
              minimum=0, maximum=30, practice=True),
    Threshold("weight_max_age_days", 30, "days",
              "Vigil practice default (no published rule): oldest weight a mg/kg dose may use",
              minimum=1, maximum=365, practice=True),
    Threshold("alarm_systolic", 180, "mmHg",
              "Alarm at or above; CLINICAL.md Monitoring: severe hypertension in 0.98% of IV "
              "sessions, Yale series 2024 (the 180 cut-off is practice)",
              minimum=120, maximum=250, practice=True),
    Threshold("alarm_diastolic", 110, "mmHg",
              "Alarm at or above; CLINICAL.md Monitoring: severe hypertension, Yale series 2024 "
              "(the 110 cut-off is practice)",
              minimum=80, maximum=150, practice=True),
    Threshold("bp_rise_systolic", 40, "mmHg",
              "Alarm at a rise this large over pre-dose; CLINICAL.md Monitoring: >= +40 mmHg "
              "systolic, Spravato label",
              minimum=10, maximum=100),
    Threshold("bp_rise_diastolic", 25, "mmHg",
              "Alarm at a rise this large over pre-dose; CLINICAL.md Monitoring: >= +25 mmHg "
              "diastolic, Spravato label",
              minimum=10, maximum=60),
    Threshold("alarm_spo2", 92, "%",
              "Vigil practice default (no published rule): alarm below this SpO2",
              minimum=80, maximum=99, practice=True),
    Threshold("alarm_respiratory_rate", 10, "breaths/min",
              "Vigil practice default (no published rule): alarm below this respiratory rate",
              minimum=4, maximum=20, practice=True),
    Threshold("alarm_heart_rate_high", 120, "beats/min",
              "Vigil practice default (no published rule): alarm above this heart rate",
              minimum=80, maximum=200, practice=True),
    Threshold("alarm_heart_rate_low", 50, "beats/min",
              "Vigil practice default (no published rule): alarm below this heart rate",
              minimum=30, maximum=70, practice=True),
    Threshold("creep_recent_doses", 3, "doses",
              "Vigil practice default (no published rule): the latest doses whose median is "
              "compared with the earlier ones'; CLINICAL.md Drugs: steep dose-response, "
              "Krystal et al. 2019",
              minimum=1, maximum=20, practice=True),
    Threshold("creep_min_doses", 6, "doses",
              "Vigil practice default (no published rule): fewest doses before creep is "
              "judged, so the earlier doses outnumber one odd session",
              minimum=2, maximum=100, practice=True),
    Threshold("creep_max_rise", Decimal("0.20"), "ratio",
              "Vigil practice default (no published rule): how far the recent median dose may "
              "rise over the earlier median; CLINICAL.md Drugs: more dissociation and no added "
              "benefit at higher doses, Krystal et al. 2019; Fava 2017",
              minimum=Decimal("0.05"), maximum=Decimal("2.0"), practice=True),
    Threshold("low_dose_ratio", Decimal("0.4"), "ratio of the planned dose",
              "CLINICAL.md Drugs: 0.2 mg/kg is subtherapeutic against the usual 0.5 mg/kg, "
              "Krystal et al. 2019: a dose under 0.4 of the plan's treats nothing",
              minimum=Decimal("0.05"), maximum=Decimal("1.0")),
    Threshold("below_plan_run_doses", 4, "doses",
              "Vigil practice default (no published rule): how many of a nurse's last doses "
              "must each fall under their own plans (dosing.below_plan_run); honest doses "
              "follow their plan, so a run this long is rarely clinical chance",
              minimum=2, maximum=50, practice=True),
    Threshold("below_plan_run_max_ratio", Decimal("0.85"), "ratio of the planned dose",
              "Vigil practice default (no published rule): a dose under this share of its "
              "plan's counts in a run; above dosing.low_dose_ratio (0.4), which flags one "
              "subtherapeutic dose alone; CLINICAL.md Diversion: under-dosing, BD/CareFusion",
              minimum=Decimal("0.1"), maximum=Decimal("1.0"), practice=True),
    Threshold("below_plan_run_min_patients", 2, "patients",
              "Vigil practice default (no published rule): the run must span this many "
              "patients, so one patient's own tolerance or reduced plan is not her nurse's run",
              minimum=1, maximum=20, practice=True),
    Threshold("large_waste_ratio", Decimal("0.5"), "ratio of the planned dose",
              "Vigil practice default (no published rule): waste this large a share of the "
              "planned dose; CLINICAL.md Diversion: whole-dose waste, BD/CareFusion patents",
              minimum=Decimal("0.05"), maximum=Decimal("10"), practice=True),
    Threshold("dose_outside_visit_minutes", 60, "min",
              "Vigil practice default (no published rule): how far outside its visit's "
              "scheduled window a dose may start (as late as a check-in may be)",
              minimum=0, maximum=480, practice=True),
    Threshold("extra_visit_cluster_count", 3, "visits",
              "Vigil practice default (no published rule): override or out-of-series visits "
              "of one patient that make a cluster",
              minimum=2, maximum=50, practice=True),
    Threshold("extra_visit_cluster_days", 28, "days",
              "Vigil practice default: the window a cluster of extra visits falls in, as long "
              "as the longest frequency window; CLINICAL.md Frequency: doses per 28 days",
              minimum=7, maximum=365, practice=True),
    Threshold("waste_late_hours", 4, "h",
              "Vigil practice default: longest gap from the end of the dose to its waste, "
              "40 min infusion + 2 h monitoring + margin; CLINICAL.md Diversion: long delay "
              "between dispense and waste, BD/CareFusion patents",
              minimum=1, maximum=72, practice=True),
    Threshold("witness_pair_max_p_value", Decimal("0.0001"), "probability",
              "Vigil practice default: chance of so many shared wastes if witnesses were "
              "picked at random; 40 nurses make ~1,600 pairs, so 1 in 10,000 keeps an honest "
              "scan near zero; CLINICAL.md Diversion: waste score (BD/CareFusion)",
              minimum=Decimal("0.000001"), maximum=Decimal("0.05"), practice=True),
    Threshold("witness_pair_min_wastes", 10, "wastes",
              "Vigil practice default (no published rule): fewest wastes of a nurse before "
              "her witnesses are compared with chance",
              minimum=2, maximum=1000, practice=True),
    Threshold("witness_pair_min_share", Decimal("0.5"), "share of her wastes",
              "Vigil practice default (no published rule): one witness on at least half of "
              "a nurse's wastes, so a small team's regular partner is not flagged on p alone",
              minimum=Decimal("0.1"), maximum=Decimal("1.0"), practice=True),
    Threshold("witness_pair_recent_days", 7, "days",
              "Vigil practice default (no published rule): the recent period a nurse's "
              "witnesses are also compared with chance in, so a friendship that has just "
              "begun shows within a week; CLINICAL.md Diversion: waste score (BD/CareFusion)",
              minimum=1, maximum=90, practice=True),
    Threshold("witness_pair_recent_min_wastes", 5, "wastes",
              "Vigil practice default (no published rule): fewest wastes of a nurse in the "
              "recent period (witness_pair_recent_days) before its witnesses are compared "
              "with chance; the halved p limit is the gate (5 of 5 passes it only with 8 or "
              "more witnesses to choose from)",
              minimum=2, maximum=1000, practice=True),
    Threshold("witness_late_minutes", 30, "min",
              "Vigil practice default (no published rule): longest a witness's phone may "
              "confirm a waste after the nurse recorded it; a witness watches the waste, in "
              "person or on a live call, and confirms then, and 30 min also absorbs two phone "
              "clocks' ordinary disagreement; ASHP Guidelines on Preventing Diversion of "
              "Controlled Substances (2017): waste witnessed as it happens",
              minimum=5, maximum=1440, practice=True),
    Threshold("waste_rate_z", Decimal("3.5"), "modified z",
              "Iglewicz & Hoaglin 1993: modified z above 3.5 is an outlier (Epstein's 2 SD "
              "flags ~1 in 40 honest nurses); CLINICAL.md Diversion: more waste than usual "
              "(BD/CareFusion), peer score within a role (Omnicell; Bluesight IRIS)",
              minimum=Decimal("2.0"), maximum=Decimal("10.0")),
    Threshold("administered_z", Decimal("3.5"), "modified z",
              "Iglewicz & Hoaglin 1993: |modified z| above 3.5 is an outlier, here of a "
              "nurse's doses as a ratio of their own plans' (dosing.plan_ratio_outlier); "
              "CLINICAL.md Diversion: per-shift usage against peers in the same role, "
              "normalised per visit (Omnicell; Bluesight IRIS; heliometrics)",
              minimum=Decimal("2.0"), maximum=Decimal("10.0")),
    Threshold("activity_low_z", Decimal("3.5"), "modified z",
              "Iglewicz & Hoaglin 1993: modified z below -3.5 is an outlier; CLINICAL.md "
              "Diversion: count per day worked (Epstein 2007), unusually low activity counts "
              "too (Omnicell; Bluesight IRIS)",
              minimum=Decimal("2.0"), maximum=Decimal("10.0")),
    Threshold("peer_min_visits", 20, "visits",
              "Vigil practice default (no published rule): fewest visits before a nurse's "
              "waste per visit is compared with her peers'",
              minimum=5, maximum=1000, practice=True),
    Threshold("peer_min_doses", 20, "doses",
              "Vigil practice default (no published rule): fewest doses before a nurse's "
              "doses against their plans, or her waste as a share, are compared with her peers'",
              minimum=5, maximum=1000, practice=True),
    Threshold("peer_min_days_worked", 10, "days",
              "Vigil practice default (no published rule): fewest days worked before a "
              "nurse's visits per day are compared with her peers'",
              minimum=1, maximum=365, practice=True),
    Threshold("peer_min_peers", 8, "nurses",
              "Vigil practice default (no published rule): fewest other nurses in the role "
              "with enough activity for a median and MAD to mean anything",
              minimum=3, maximum=1000, practice=True),
    Threshold("peer_min_difference", Decimal("0.15"), "ratio to the peer median",
              "Vigil practice default (no published rule): smallest departure from the peer "
              "median worth a review, as a z-score explodes when peers barely differ",
              minimum=Decimal("0.01"), maximum=Decimal("1.0"), practice=True),
    # Robust peers (issue 17 items 6 and 7): floors under the robust scale, waste as a share
    # of what a nurse drew against her peers and her own history, doses against their plans.
    Threshold("waste_rate_spread_floor", Decimal("0.08"), "share of the peer median",
              "Vigil practice default (no published rule): smallest spread a waste per visit "
              "is scored on, as honest nurses' waste per visit varies by about this much with "
              "their patients' doses; MAD implodes when peers nearly tie (Rousseeuw & Croux "
              "1993); CLINICAL.md Diversion: more waste than usual (BD/CareFusion)",
              minimum=Decimal("0.01"), maximum=Decimal("1.0"), practice=True),
    Threshold("waste_share_z", Decimal("3.5"), "modified z",
              "Iglewicz & Hoaglin 1993: modified z above 3.5 is an outlier; CLINICAL.md "
              "Diversion: more waste than usual (BD/CareFusion), dispense = administered + "
              "wasted + returned (Bluesight), peer score within a role (Omnicell)",
              minimum=Decimal("2.0"), maximum=Decimal("10.0")),
    Threshold("waste_share_spread_floor", Decimal("0.08"), "share of the peer median",
              "Vigil practice default (no published rule): smallest spread µg wasted over "
              "what her doses' plans left in their containers is scored on, as honest nurses "
              "sit near 1 and nearly tie; MAD implodes when peers nearly tie (Rousseeuw & "
              "Croux 1993)",
              minimum=Decimal("0.01"), maximum=Decimal("1.0"), practice=True),
    Threshold("waste_share_recent_days", 14, "days",
              "Vigil practice default (no published rule): the recent period a nurse's waste "
              "share is compared with her own earlier share in the scan window; CLINICAL.md "
              "Diversion: more waste than usual (BD/CareFusion waste score)",
              minimum=7, maximum=60, practice=True),
    Threshold("waste_share_min_recent_doses", 5, "doses",
              "Vigil practice default (no published rule): fewest doses in the recent period "
              "before her recent waste share is compared with her own history",
              minimum=2, maximum=200, practice=True),
    Threshold("waste_share_min_earlier_doses", 10, "doses",
              "Vigil practice default (no published rule): fewest doses before the recent "
              "period for her own history to be a baseline",
              minimum=3, maximum=1000, practice=True),
    Threshold("waste_share_rise_min", Decimal("0.25"), "ratio to her earlier figure",
              "Vigil practice default (no published rule): smallest rise of µg wasted over "
              "what her plans left over her own earlier figure worth a review",
              minimum=Decimal("0.05"), maximum=Decimal("5.0"), practice=True),
    Threshold("waste_share_rise_z", Decimal("3.5"), "modified z",
              "Iglewicz & Hoaglin 1993: modified z above 3.5 is an outlier, of her rise among "
              "her role's rises over the same days; CLINICAL.md Diversion: more waste than "
              "usual (BD/CareFusion)",
              minimum=Decimal("2.0"), maximum=Decimal("10.0")),
    Threshold("waste_share_rise_spread_floor", Decimal("0.10"), "share of the peer median",
              "Vigil practice default (no published rule): smallest spread a rise over two "
              "weeks' doses is scored on, as a few patients more or less move it this much; "
              "MAD implodes when peers nearly tie (Rousseeuw & Croux 1993)",
              minimum=Decimal("0.01"), maximum=Decimal("1.0"), practice=True),
    Threshold("plan_ratio_min_recent_doses", 5, "doses",
              "Vigil practice default (no published rule): fewest planned doses in the recent "
              "period (waste_share_recent_days) before her recent doses against their plans "
              "are compared with her peers' recent ones",
              minimum=2, maximum=200, practice=True),
    Threshold("plan_ratio_spread_floor", Decimal("0.05"), "share of the peer median",
              "Vigil practice default (no published rule): smallest spread a ratio of doses to "
              "their plans is scored on; honest doses follow their plan to within syringe "
              "graduations, so a tighter spread is only rounding (Rousseeuw & Croux 1993)",
              minimum=Decimal("0.01"), maximum=Decimal("1.0"), practice=True),
    Threshold("activity_spread_floor", Decimal("0.10"), "share of the peer median",
              "Vigil practice default (no published rule): smallest spread visits per day "
              "are scored on, as schedules and drives move them this much (a nurse at 1.55 "
              "visits a day against 1.91 scored z -27 on a MAD near 0); Rousseeuw & Croux "
              "1993; CLINICAL.md Diversion: count per day worked (Epstein 2007)",
              minimum=Decimal("0.01"), maximum=Decimal("1.0"), practice=True),
    Threshold("travel_max_kmh", 100, "km/h",
              "Vigil practice default (no published rule): faster than a nurse can drive "
              "between two homes; DESIGN.md Safeguards: too far apart for the time between",
              minimum=20, maximum=300, practice=True),
    Threshold("clock_drift_max_seconds", 300, "s",
              "Vigil practice default (no published rule): device clock error that starts to "
              "distort dose intervals and monitoring minutes (DESIGN.md: device time is never "
              "trusted for ordering)",
              minimum=5, maximum=86400, practice=True),
    Threshold("interval_tolerance_minutes", 60, "min",
              "Vigil practice default (no published rule): how much sooner than the minimum "
              "interval a dose may start, as visits are booked the minimum apart and doses "
              "start a little off their booked time; CLINICAL.md Frequency: 48 h minimum",
              minimum=0, maximum=720, practice=True),
    # Escalation and refusals (issue 17 items 5 and 8): a case counts distinct occurrences.
    Threshold("escalation_occurrences_first", 3, "occurrences",
              "Vigil practice default (no published rule): distinct occurrences of one case "
              "(the same home out of range, the same nurse's refusals) that raise its severity "
              "one step; CLINICAL.md EVV: out of range with a reason is reviewed; Diversion: "
              "repeated events weigh more than one (BD/CareFusion waste score)",
              minimum=2, maximum=1000, practice=True),
    Threshold("escalation_occurrences_second", 6, "occurrences",
              "Vigil practice default (no published rule): distinct occurrences of one case "
              "that raise its severity a second step (never to critical by repetition alone)",
              minimum=2, maximum=1000, practice=True),
    Threshold("refusals_window_days", 7, "days",
              "Vigil practice default (no published rule): how far back a nurse's refused "
              "custody writes (wrong seal, too little stock, no witness) are counted; "
              "CLINICAL.md Diversion: per-person activity over a period (Epstein 2007)",
              minimum=1, maximum=90, practice=True),
    Threshold("refusals_min_count", 3, "refusals",
              "Vigil practice default (no published rule): refused custody writes by one "
              "nurse within the window that make a pattern rather than a slip; CLINICAL.md "
              "Diversion: waste score and atypical activity (BD/CareFusion; Epstein 2007)",
              minimum=2, maximum=100, practice=True),
    Threshold("sync_offline_window_days", 30, "days",
              "Vigil practice default (no published rule): the longest a phone may stay "
              "offline and still sync incrementally; deletions are kept this long (DESIGN.md "
              "Sync with the phone; the refresh token also lasts 30 days)",
              minimum=1, maximum=365, practice=True),
    # The pharmacy side (issue 17 item 1): adjustments, shortfalls, receipts and disposals.
    Threshold("pharmacy_adjustment_max_share", Decimal("0.01"), "share of µg received",
              "Vigil practice default (no published rule): net stock one person wrote off the "
              "vault by adjustments, as a share of what the vault received in the scan window; "
              "CLINICAL.md DEA: theft or significant loss, 21 CFR 1301.76(b) (the quantity "
              "against the business, a pattern over time, losses tied to one person's access)",
              minimum=Decimal("0.001"), maximum=Decimal("0.5"), practice=True),
    Threshold("pharmacy_shortfall_report_days", 3, "days",
              "Vigil practice default: how long after a count shortfall a loss may be "
              "reported before its write-off stands unreported, the 1 business day of "
              "CLINICAL.md DEA (theft or significant loss, 21 CFR 1301.76(b)) plus a weekend",
              minimum=1, maximum=45, practice=True),
    Threshold("pharmacy_receipt_tolerance_ug", 0, "µg",
              "CLINICAL.md DEA: dispenser records, each receipt's quantity (21 CFR "
              "1304.22(c)); the purchaser records what was received against the order (21 CFR "
              "1305.13(e)): any difference from the order or invoice is a finding",
              minimum=0, maximum=1_000_000),
    Threshold("pharmacy_disposal_min_entries", 3, "destructions",
              "Vigil practice default (no published rule): fewest destructions or returns to "
              "a reverse distributor by one pharmacist before her share is compared with peers'",
              minimum=1, maximum=1000, practice=True),
    Threshold("pharmacy_peer_min_peers", 1, "pharmacists",
              "Vigil practice default (no published rule): fewest other pharmacists who moved "
              "stock in the window; a home-infusion pharmacy has few, so the spread has floors",
              minimum=1, maximum=1000, practice=True),
    Threshold("pharmacy_disposal_z", Decimal("3.5"), "modified z",
              "Iglewicz & Hoaglin 1993: modified z above 3.5 is an outlier; CLINICAL.md "
              "Diversion: peer score within a role (Omnicell; Bluesight IRIS)",
              minimum=Decimal("2.0"), maximum=Decimal("10.0")),
    Threshold("pharmacy_disposal_min_ratio", Decimal("2.0"), "ratio to the peer median",
              "Vigil practice default (no published rule): smallest multiple of the peers' "
              "median share destroyed worth a review, so a z-score alone never flags",
              minimum=Decimal("1.1"), maximum=Decimal("20"), practice=True),
    Threshold("pharmacy_disposal_spread_floor", Decimal("0.015"),
              "destructions per day worked",
              "Vigil practice default (no published rule): smallest spread destructions per day "
              "worked are scored on (about one in 70 days), as one pharmacist may destroy all "
              "of a small pharmacy's damaged or expired stock; MAD implodes when peers nearly "
              "tie (Rousseeuw & Croux 1993)",
              minimum=Decimal("0.001"), maximum=Decimal("1"), practice=True),
    Threshold("scan_window_days", 90, "days",
              "Vigil practice default (no published rule): how far back the nightly scan "
              "compares nurses with their peers; CLINICAL.md Diversion: per-person activity "
              "against peers (Epstein 2007), normalised by visits worked",
              minimum=7, maximum=365, practice=True),
    # Time (issue 17 item 2): hours in the organisation's timezone.
    Threshold("service_hours_start", 7, "h local",
              "CLINICAL.md Orders and plausibility: home-infusion visits are scheduled in "
              "daytime hours, set per organisation in its timezone (the hour is practice)",
              minimum=0, maximum=23, practice=True),
    Threshold("service_hours_end", 21, "h local",
              "CLINICAL.md Orders and plausibility: doses outside the organisation's stated "
              "hours need a reason (the hour is practice)",
              minimum=1, maximum=24, practice=True),
    Threshold("service_hours_vault_grace_minutes", 120, "min",
              "Vigil practice default (no published rule): how long before the first visit "
              "and after the last a bag may be filled or brought back, as long as the bag "
              "return deadline (bag_return_deadline_hours)",
              minimum=0, maximum=360, practice=True),
    Threshold("off_hours_window_days", 28, "days",
              "Vigil practice default (no published rule): the window over which off-hours "
              "work by one nurse or at one patient is counted; CLINICAL.md Diversion: "
              "per-person activity over a period (Epstein 2007)",
              minimum=7, maximum=90, practice=True),
    Threshold("off_hours_min_events", 3, "occasions",
              "Vigil practice default (no published rule): off-hours visits or bag movements "
              "in the window that make a pattern; one with a reason is not a case",
              minimum=2, maximum=50, practice=True),
    Threshold("hours_late_margin_minutes", 180, "min",
              "Vigil practice default (no published rule): work starting this close to the "
              "end of service hours counts as late, for a nurse's pattern of hours",
              minimum=0, maximum=720, practice=True),
    Threshold("hours_shift_recent_days", 14, "days",
              "Vigil practice default (no published rule): the recent days whose hours are "
              "compared with the nurse's own history before them",
              minimum=3, maximum=60, practice=True),
    Threshold("hours_shift_min_recent", 6, "occasions",
              "Vigil practice default (no published rule): fewest recent occasions before a "
              "change in a nurse's hours is judged",
              minimum=3, maximum=200, practice=True),
    Threshold("hours_shift_min_history", 15, "occasions",
              "Vigil practice default (no published rule): fewest earlier occasions that make "
              "a nurse's own history of hours",
              minimum=5, maximum=1000, practice=True),
    Threshold("hours_shift_min_rise", Decimal("0.15"), "share of occasions",
              "Vigil practice default (no published rule): smallest rise in the share of her "
              "visits that are late or off hours worth a review (one late visit in a day of "
              "three, on half her days)",
              minimum=Decimal("0.05"), maximum=Decimal("1.0"), practice=True),
    Threshold("hours_shift_max_p_value", Decimal("0.001"), "probability",
              "Vigil practice default: chance of so many late or off-hours occasions if her "
              "history's rate held (exact binomial tail, as waste.witness_pair); CLINICAL.md "
              "Diversion: her own usual activity (Bluesight IRIS)",
              minimum=Decimal("0.000001"), maximum=Decimal("0.05"), practice=True),
    # Plausibility of inputs (issue 17 item 3).
    Threshold("weight_max_change_per_week", Decimal("0.05"), "ratio per week",
              "CLINICAL.md Orders and plausibility: 2% in a week is clinically significant "
              "(ASPEN/Academy, White et al. JPEN 2012); faster than 5% a week, judged over at "
              "least a week, is an entry error or manipulation (practice)",
              minimum=Decimal("0.01"), maximum=Decimal("0.5"), practice=True),
    Threshold("weight_min_change_g", 1500, "g",
              "Vigil practice default (no published rule): smallest weight change worth a "
              "review, above scale error and a day's fluid shift",
              minimum=100, maximum=20000, practice=True),
    Threshold("weight_before_dose_hours", 12, "h",
              "Vigil practice default (no published rule): a weighing this long before a dose "
              "by the dosing nurse belongs to that visit",
              minimum=1, maximum=72, practice=True),
    Threshold("weight_before_dose_rise", Decimal("0.03"), "ratio",
              "CLINICAL.md Orders and plausibility: 2% in a week is clinically significant "
              "(White et al. JPEN 2012); a rise over the patient's prior weights beyond this "
              "just before a dose is questioned (practice)",
              minimum=Decimal("0.005"), maximum=Decimal("0.5"), practice=True),
    Threshold("weight_prior_count", 3, "weighings",
              "Vigil practice default (no published rule): the latest prior weighings whose "
              "median is the patient's usual weight",
              minimum=1, maximum=20, practice=True),
    Threshold("flat_min_sessions", 10, "sessions",
              "Vigil practice default (no published rule): a nurse's latest sessions whose "
              "readings are judged flat (fewer are not judged), so a new habit shows at once",
              minimum=3, maximum=1000, practice=True),
    Threshold("flat_min_share", Decimal("0.6"), "share of sessions",
              "Vigil practice default: share of her sessions with one identical reading; "
              "CLINICAL.md Monitoring: blood pressure rises after the dose and CADSS varies "
              "widely (mean ~7.7, SD 9.2), so honest readings differ",
              minimum=Decimal("0.2"), maximum=Decimal("1.0"), practice=True),
    Threshold("flat_min_patients", 2, "patients",
              "Vigil practice default (no published rule): the identical reading must come "
              "from this many patients, as one patient's own may be steady",
              minimum=1, maximum=50, practice=True),
    Threshold("flat_max_p_value", Decimal("0.0001"), "probability",
              "Vigil practice default: chance of so many identical readings at the rate her "
              "peers record that reading (exact binomial tail, as waste.witness_pair), when "
              "she has peer_min_peers peers; CLINICAL.md Monitoring: CADSS varies widely "
              "(mean ~7.7, SD 9.2), yet small scores repeat by chance",
              minimum=Decimal("0.000001"), maximum=Decimal("0.05"), practice=True),
    Threshold("weight_dose_recent_doses", 3, "doses",
              "Vigil practice default (no published rule): the latest doses compared with "
              "the earlier ones for mg rising while mg/kg stays flat",
              minimum=1, maximum=20, practice=True),
    Threshold("weight_dose_min_doses", 6, "doses",
              "Vigil practice default (no published rule): fewest doses with a weight before "
              "mg against mg/kg is judged",
              minimum=2, maximum=100, practice=True),
    Threshold("weight_dose_min_rise", Decimal("0.10"), "ratio",
              "Vigil practice default: rise of the recent median dose in mg over the earlier; "
              "CLINICAL.md Orders and plausibility: more than 5% weight in a month is "
              "significant (White et al. JPEN 2012)",
              minimum=Decimal("0.02"), maximum=Decimal("2.0"), practice=True),
    Threshold("weight_dose_flat_tolerance", Decimal("0.05"), "ratio",
              "Vigil practice default (no published rule): how far the recent median mg/kg "
              "may move and still count as flat",
              minimum=Decimal("0"), maximum=Decimal("0.5"), practice=True),
    # Prescribers (issue 17 item 4): the protocol dose, and prescribers against their peers.
    Threshold("protocol_mg_per_kg", Decimal("0.5"), "mg/kg",
              "CLINICAL.md Orders, authentication and plausibility: protocol dose 0.5 mg/kg "
              "over 40 min, 1.0 mg/kg gave no added benefit, a plan above 0.5 mg/kg needs a "
              "stated reason (practice); Krystal et al. 2019; Fava et al. 2020",
              minimum=Decimal("0.1"), maximum=Decimal("1.0"), practice=True),
    Threshold("prescriber_min_plans", 5, "plans",
              "Vigil practice default (no published rule): fewest patients' plans a prescriber "
              "wrote (each revision of one plan counts once) before the doses and overrides "
              "of those plans are compared with other prescribers'",
              minimum=2, maximum=1000, practice=True),
    Threshold("prescriber_min_peers", 2, "prescribers",
              "Vigil practice default (no published rule): fewest other prescribers with enough "
              "plans to compare with, as an organisation has a few (the spread floor and the "
              "minimum difference keep a small group from making a difference extreme); "
              "CLINICAL.md Diversion: peer score within a role (Omnicell; Bluesight IRIS)",
              minimum=1, maximum=1000, practice=True),
    Threshold("prescriber_peer_z", Decimal("3.5"), "modified z",
              "Iglewicz & Hoaglin 1993: modified z above 3.5 is an outlier; CLINICAL.md "
              "Diversion: usage against peers in the same role (Omnicell; Bluesight IRIS)",
              minimum=Decimal("2.0"), maximum=Decimal("10.0")),
    Threshold("prescriber_min_dose_difference", Decimal("0.25"), "ratio to the peer median",
              "Vigil practice default (no published rule): smallest departure of a "
              "prescriber's mean planned mg/kg from the other prescribers' median worth a "
              "review (0.625 against 0.5 mg/kg), as a z-score explodes when peers barely differ",
              minimum=Decimal("0.05"), maximum=Decimal("2.0"), practice=True),
    Threshold("prescriber_dose_spread_floor", Decimal("0.1"), "ratio to the peer median",
              "Vigil practice default (no published rule): the least spread of planned mg/kg "
              "among prescribers a z-score is taken on (0.05 mg/kg at 0.5 mg/kg), since "
              "prescribers who all write the protocol dose have a spread of nothing; modified "
              "z with a floor on its scale, Iglewicz & Hoaglin 1993",
              minimum=Decimal("0.01"), maximum=Decimal("1.0"), practice=True),
    Threshold("prescriber_min_override_difference", Decimal("0.5"), "overrides per plan",
              "Vigil practice default (no published rule): smallest excess of frequency "
              "overrides per plan version over the other prescribers' median worth a review "
              "(one override more every two plans); CLINICAL.md Frequency: limits per phase",
              minimum=Decimal("0.1"), maximum=Decimal("10.0"), practice=True),
    Threshold("prescriber_override_spread_floor", Decimal("0.25"), "overrides per plan",
              "Vigil practice default (no published rule): the least spread of overrides per "
              "plan version a z-score is taken on, since most prescribers override nothing "
              "and a median and spread of 0 would make one override extreme",
              minimum=Decimal("0.05"), maximum=Decimal("10.0"), practice=True),
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

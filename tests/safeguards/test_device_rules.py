"""A phone's clock drifting beyond the policy's seconds, ahead or behind."""

from __future__ import annotations

import pytest

from safeguards import Subject, SubjectKind
from safeguards.rules.devices import DEVICES
from tests.safeguards.factories import clock, facts, found, ids

CASES = [
    # clock_drift_max_seconds 300, whether measured as a lead or reported by the phone
    ("on time", clock(), {}, False),
    ("300 s ahead", clock(max_lead_seconds=300), {}, False),
    ("301 s ahead", clock(max_lead_seconds=301), {}, True),
    ("reports 300 s behind", clock(reported_offset_seconds=-300), {}, False),
    ("reports 301 s behind", clock(reported_offset_seconds=-301), {}, True),
    ("reports 301 s ahead", clock(reported_offset_seconds=301), {}, True),
    ("limit raised", clock(max_lead_seconds=301), {"clock_drift_max_seconds": 600}, False),
]


@pytest.mark.parametrize(("device_clock", "overrides", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_clock_drift_thresholds(device_clock, overrides, expected):
    findings = found(DEVICES, facts(clocks=(device_clock,)), overrides)
    assert ("device.clock_drift" in ids(findings)) is expected


def test_clock_drift_is_one_finding_per_device():
    [finding] = found(DEVICES, facts(clocks=(clock(max_lead_seconds=900),)))
    assert finding.subject == Subject(SubjectKind.DEVICE, "device-1")
    assert finding.evidence["nurse_id"] == "nurse-1"
    assert "900 s" in finding.summary
    [worse] = found(DEVICES, facts(clocks=(clock(max_lead_seconds=1_800, events=90),)))
    assert worse.dedup_key == finding.dedup_key

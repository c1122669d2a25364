"""The compiled reader of pushed records answers exactly as the API schema's `load`."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import Schema, ValidationError, fields, post_load

from backend.sync.readers import compile_reader
from backend.sync.tables import PUSH_SCHEMAS

SIGNED = {"id": "5b0f7c1e-1111-4c4c-9d9d-000000000001",
          "occurred_at": "2026-11-03T15:05:00+00:00", "signature": "c2lnbmVk"}
VITALS = {"systolic": 126, "diastolic": 80, "heart_rate": 72, "spo2": 97,
          "respiratory_rate": 14, "moaas": 4, "cadss_items": {"1": 1, "2": 0, "22": 4},
          "cadss_total": 5}
# One record each table's schema accepts, to be mutated.
ACCEPTED = {
    "observations": {**SIGNED, **VITALS, "bprs_items": {"1": 2, "4": 7}, "bprs_total": 9},
    "pre_doses": {**SIGNED, **VITALS, "decision": "go", "co_medications": ["opioid"]},
    "doses": {**SIGNED, "product_id": "5b0f7c1e-2222-4c4c-9d9d-000000000001", "lot": "L1",
              "expiry": "2028-01-31", "quantity_ug": 35_000, "route": "IV",
              "infusion_started_at": "2026-11-03T15:10:00+00:00",
              "infusion_ended_at": "2026-11-03T15:50:00+00:00"},
    "discharges": {**SIGNED, **VITALS, "state": "baseline", "adverse_event_category": "none",
                   "ready_to_leave_at": "2026-11-03T15:00:00+00:00",
                   "respiratory_depression": False},
    "outcome_scores": {**SIGNED, "instrument": "phq9", "items": {str(n): 1 for n in range(1, 10)}},
    "evv_events": {"latitude": 41.8781, "longitude": -87.6298, "accuracy_m": 12,
                   "occurred_at": "2026-11-03T15:00:00+00:00", "reason": "parked outside"},
}
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.integers(-3, 310),
              st.floats(allow_nan=False), st.text(max_size=4),
              st.sampled_from(["go", "baseline", "phq9", "IV", SIGNED["id"], SIGNED["occurred_at"],
                               "2026-11-03T15:00:00", "1900-01-01T00:00:00+14:00", ""])),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(["1", "2", "9", "x", ""]), inner,
                                            max_size=3)),
    max_leaves=6)
# Values marshmallow reads otherwise than their JSON type suggests, or refuses at an edge.
TRICKY = st.sampled_from([True, False, None, 0, 1, 4, 5.0, "5", 2**31, -2**31 - 1, {},
                          {"1": True}, {"1": None}, {"1": 4.0}, {1: 1}, "", " "])


def outcome(load, record: dict) -> tuple:
    """Return what `load` made of the record, or the messages it refused it with."""
    try:
        return ("loaded", load(dict(record)))
    except ValidationError as refused:
        return ("refused", refused.messages)


@pytest.mark.parametrize("table", sorted(ACCEPTED))
def test_an_accepted_record_reads_the_same(table):
    schema = PUSH_SCHEMAS[table]()
    assert outcome(compile_reader(schema), ACCEPTED[table]) == outcome(
        schema.load, ACCEPTED[table]) == ("loaded", schema.load(ACCEPTED[table]))


@settings(max_examples=600, deadline=None)
@given(table=st.sampled_from(sorted(ACCEPTED)), data=st.data())
def test_any_record_reads_and_is_refused_the_same(table, data):
    schema = PUSH_SCHEMAS[table]()
    record = dict(ACCEPTED[table])
    for key in data.draw(st.lists(st.sampled_from([*record, "colour", "id", "visit_id"]),
                                  max_size=3)):
        if data.draw(st.booleans()):
            record.pop(key, None)
        else:
            record[key] = data.draw(st.one_of(TRICKY, JSON))
    assert outcome(compile_reader(schema), record) == outcome(schema.load, record)


def test_a_schema_with_hooks_the_reader_does_not_run_is_read_by_marshmallow():
    class Loaded(Schema):
        value = fields.Integer()

        @post_load
        def _wrap(self, data, **_kwargs):
            return ("wrapped", data)

    schema = Loaded()
    assert compile_reader(schema) == schema.load

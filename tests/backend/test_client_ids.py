"""A retry finds the record stored under its id; a different record under the id is refused."""

from __future__ import annotations

import pytest

from backend.client_ids import stored_twin
from backend.errors import Conflict

STORED = {"id": "a", "systolic": 120}


@pytest.mark.parametrize(("stored", "incoming", "expected"), [
    (None, STORED, None),
    (STORED, dict(STORED), STORED),
])
def test_a_new_id_or_an_identical_retry_passes(stored, incoming, expected):
    assert stored_twin(stored, incoming, content=dict, conflict=Conflict("taken")) is expected


def test_a_different_record_under_a_stored_id_is_the_conflict():
    conflict = Conflict("A different record already has this id.")
    with pytest.raises(Conflict) as raised:
        stored_twin(STORED, {**STORED, "systolic": 121}, content=dict, conflict=conflict)
    assert raised.value is conflict

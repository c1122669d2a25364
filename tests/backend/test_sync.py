"""WatermelonDB-compatible sync: pull, push, conflicts, retries, quarantine, entitlement."""

from __future__ import annotations

import uuid

import pytest

from backend.accounts.models import Role
from tests.factories import Pharmacy, World

DAY1 = "2026-11-03T15:00:00+00:00"


class Handset:
    """A nurse's phone speaking the sync protocol, signing rows as WatermelonDB holds them."""

    def __init__(self, pharmacy: Pharmacy, nurse=None, device=None) -> None:
        self.pharmacy = pharmacy
        self.nurse = nurse or pharmacy.nurse
        self.device_id, self.phone = device or (pharmacy.device_id, pharmacy.phone)
        self.headers = pharmacy.world.headers(pharmacy.org, self.nurse, self.device_id)
        self.cursor = 0

    def pull(self, cursor=None, **params):
        query = {"last_pulled_at": self.cursor if cursor is None else cursor,
                 "schema_version": 1, **params}
        return self.pharmacy.client.get("/api/v1/sync", query_string=query,
                                        headers=self.headers)

    def push(self, changes, key=None, cursor=None, headers=None, **params):
        extra = {"Idempotency-Key": key} if key else {}
        query = {"last_pulled_at": self.cursor if cursor is None else cursor, **params}
        return self.pharmacy.client.post("/api/v1/sync", query_string=query,
                                         headers={**self.headers, **extra, **(headers or {})},
                                         json={"changes": changes})

    def sync_pull(self):
        response = self.pull()
        assert response.status_code == 200, response.json
        self.cursor = response.json["timestamp"]
        return response.json["changes"]

    def row(self, columns: dict, **bookkeeping) -> dict:
        row = {"id": str(uuid.uuid4()), **columns}
        return {**row, "signature": self.phone.sign(row), "_status": "created",
                "_changed": "", **bookkeeping}


@pytest.fixture
def pharmacy(world: World) -> Pharmacy:
    pharmacy = Pharmacy(world)
    pharmacy.plan()
    pharmacy.receive(1_000_000)
    pharmacy.dispense(500_000)
    return pharmacy


def test_first_pull_holds_the_nurses_schedule(pharmacy):
    visit = pharmacy.schedule(DAY1).json
    handset = Handset(pharmacy)
    changes = handset.sync_pull()
    assert [v["id"] for v in changes["visits"]["created"]] == [visit["id"]]
    assert changes["patients"]["created"][0]["name"] == "Pat Test"
    assert handset.cursor > 0

"""A push whose signatures are checked on two threads applies exactly as one checked one by one."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import select

from backend.administration.models import Observation
from backend.devices import signatures
from tests.backend.sync.test_sync import DAY1, VITALS, Handset
from tests.factories import Pharmacy, World


@pytest.fixture
def pharmacy(world: World) -> Pharmacy:
    pharmacy = Pharmacy(world)
    pharmacy.plan()
    return pharmacy


@pytest.fixture
def visit(pharmacy) -> dict:
    return pharmacy.schedule(DAY1).json


@pytest.mark.parametrize("threaded", [True, False], ids=["two threads", "one by one"])
def test_signatures_checked_on_two_threads_apply_as_one_by_one(pharmacy, visit, world,
                                                               monkeypatch, threaded):
    if not threaded:
        monkeypatch.setattr(signatures, "SHARED_FROM", 10**9)
    threads, check = set(), signatures._check
    monkeypatch.setattr(signatures, "_check",
                        lambda *args: (threads.add(threading.get_ident()), check(*args)))
    handset = Handset(pharmacy)
    handset.sync_pull()
    rows, expected = [], []
    for n in range(40):
        fault = ("forged", "malformed", "invalid", None, None)[n % 5]
        vitals = {**VITALS, "spo2": 20} if fault == "invalid" else VITALS
        row = handset.row({"visit_id": visit["id"], **vitals,
                           "occurred_at": f"2026-11-03T16:{n:02d}:00+00:00"})
        if fault == "forged":
            row["heart_rate"] = 99
        elif fault == "malformed":
            row["signature"] = "###"
        rows.append(row)
        expected.append((row["id"], fault))
    twin = dict(rows[3], heart_rate=150)
    twin["signature"] = handset.phone.sign({k: v for k, v in twin.items()
                                            if k not in ("signature", "_status", "_changed")})
    # Listed backwards, with a conflicting twin and an identical copy: applied by their time.
    response = handset.push({"observations": {"created": [*reversed(rows), twin, rows[4]],
                                              "updated": [], "deleted": []}})
    assert response.status_code == 200, response.json
    assert len(threads) == (2 if threaded else 1)
    assert response.json["applied"] == {"observations": 16}
    assert response.json["unchanged"] == {"observations": 1}
    reason = {"forged": "signature_invalid: bad_signature",
              "malformed": "signature_invalid: malformed_signature"}
    held = [(q["record_id"], q["reason"]) for q in response.json["quarantined"]]
    wanted = [(record_id, reason.get(fault, fault)) for record_id, fault in expected if fault]
    before_row_5 = next(at for at, (record_id, _) in enumerate(wanted)
                        if record_id == rows[5]["id"])
    wanted.insert(before_row_5,
                  (twin["id"], "conflicting_duplicate: another record already has this id"))
    assert [(record_id, text if text.startswith("signature") or text.startswith("conflicting")
             else text.split(":")[0]) for record_id, text in held] == wanted
    assert all("spo2" in text for _, text in held if text.startswith("invalid"))
    stored = set(world.session.scalars(select(Observation.id).where(
        Observation.visit_id == uuid.UUID(visit["id"]))))
    assert stored == {uuid.UUID(record_id) for record_id, fault in expected if not fault}

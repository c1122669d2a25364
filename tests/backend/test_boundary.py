"""One unit of work: only the boundary commits, and a refused request leaves only its refusal."""

from __future__ import annotations

import ast
from pathlib import Path

from sqlalchemy import func, select

from backend.accounts.models import Role
from backend.audit.models import AuditEvent
from tests.factories import World

BACKEND = Path(__file__).resolve().parents[2] / "backend"
# The modules that own a transaction: the unit of work itself.
BOUNDARY = {BACKEND / "boundary.py"}


def _commits(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "commit"]


def test_nothing_but_the_boundary_commits():
    found = {str(path.relative_to(BACKEND.parent)): lines
             for path in sorted(BACKEND.rglob("*.py")) if path not in BOUNDARY
             if (lines := _commits(path))}
    assert found == {}, "commit only in backend/boundary.py; services note, boundaries commit"


def test_the_boundary_check_sees_a_commit(tmp_path):
    stray = tmp_path / "stray.py"
    stray.write_text("def save(session):\n    session.add(1)\n    session.commit()\n")
    assert _commits(stray) == [3]


def _refusals(world: World) -> int:
    return world.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "request.refused"))


def test_a_refused_write_is_audited_and_a_refused_read_is_not(world: World):
    org = world.org()
    nurse = world.user(org, Role.NURSE)
    headers = world.headers(org, nurse)
    before = _refusals(world)
    answer = world.client.post("/api/v1/products", json={"name": "x"}, headers=headers)
    assert answer.status_code == 403
    assert world.client.get("/api/v1/flags", headers=headers).status_code == 403
    world.session.expire_all()
    assert _refusals(world) == before + 1
    [event] = world.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "request.refused", AuditEvent.user_id == nurse.id))
    assert event.detail == {"method": "POST", "route": "/api/v1/products", "status": 403,
                            "code": "forbidden"}

"""Login, refresh rotation and re-use revocation, logout, expiry, rehash and lockout."""

from __future__ import annotations

import uuid

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select, update

from backend.accounts.models import Role, User
from backend.auth.models import RefreshToken, TokenFamily
from backend.auth.service import hash_refresh_token
from backend.devices.models import Device
from tests.backend.conftest import make_app
from tests.factories import PASSWORD, World

LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_login_returns_short_lived_access_and_refresh_tokens(world: World, client):
    org = world.org()
    nurse = world.user(org, Role.NURSE)
    pair = world.login(org, nurse)
    assert pair["expires_in"] <= 900
    me = client.get("/api/v1/me", headers=bearer(pair["access_token"]))
    assert me.status_code == 200
    assert me.json["user"]["id"] == str(nurse.id)
    assert me.json["organisation"]["slug"] == org.slug


@pytest.mark.parametrize(("org_slug", "username", "password"), [
    ("right", "right", "wrong password here"),
    ("right", "nobody", PASSWORD),
    ("wrong", "right", PASSWORD),
])
def test_wrong_credentials_answer_401_alike(world: World, client, org_slug, username, password):
    org = world.org()
    user = world.user(org, Role.NURSE)
    body = {"org": org.slug if org_slug == "right" else "no-such-org",
            "username": user.username if username == "right" else username,
            "password": password}
    response = client.post(LOGIN, json=body)
    assert response.status_code == 401
    assert response.json["error"]["code"] == "invalid_credentials"


def test_deactivated_user_cannot_log_in_and_keeps_history(world: World, client):
    org = world.org()
    admin, nurse = world.user(org, Role.ADMIN), world.user(org, Role.NURSE)
    nurse_access = world.login(org, nurse)["access_token"]
    response = client.patch(f"/api/v1/users/{nurse.id}", headers=world.headers(org, admin),
                            json={"active": False})
    assert response.status_code == 200
    assert response.json["deactivated_at"] is not None
    assert client.get("/api/v1/me", headers=bearer(nurse_access)).status_code == 401
    assert client.post(LOGIN, json={"org": org.slug, "username": nurse.username,
                                    "password": PASSWORD}).status_code == 401
    users = client.get("/api/v1/users", headers=world.headers(org, admin)).json
    assert any(u["id"] == str(nurse.id) and u["active"] is False for u in users)


def test_refresh_rotates_and_the_old_token_stops_working(world: World, client):
    org = world.org()
    user = world.user(org, Role.PHARMACIST)
    first = world.login(org, user)
    second = client.post(REFRESH, json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    assert second.json["refresh_token"] != first["refresh_token"]
    assert client.get("/api/v1/me", headers=bearer(second.json["access_token"])).status_code == 200
    stored = world.session.scalars(select(RefreshToken.token_hash)).all()
    assert hash_refresh_token(second.json["refresh_token"]) in stored
    assert all(second.json["refresh_token"].encode() not in h for h in stored)


def test_reusing_a_rotated_refresh_token_revokes_the_whole_family(world: World, client):
    org = world.org()
    user = world.user(org, Role.NURSE)
    first = world.login(org, user)
    second = client.post(REFRESH, json={"refresh_token": first["refresh_token"]}).json
    replay = client.post(REFRESH, json={"refresh_token": first["refresh_token"]})
    assert replay.status_code == 401
    # The thief's replay also kills the legitimate holder's newer tokens.
    assert client.post(REFRESH, json={"refresh_token": second["refresh_token"]}).status_code == 401
    assert client.get("/api/v1/me", headers=bearer(second["access_token"])).status_code == 401
    family = world.session.scalars(select(TokenFamily).where(TokenFamily.user_id == user.id)).one()
    assert family.revoked_reason == "refresh_reuse"


def test_other_sessions_survive_a_reuse_in_one_family(world: World, client):
    org = world.org()
    user = world.user(org, Role.NURSE)
    phone, laptop = world.login(org, user), world.login(org, user)
    client.post(REFRESH, json={"refresh_token": phone["refresh_token"]})
    client.post(REFRESH, json={"refresh_token": phone["refresh_token"]})
    assert client.get("/api/v1/me", headers=bearer(laptop["access_token"])).status_code == 200


def test_logout_revokes_access_and_refresh(world: World, client):
    org = world.org()
    user = world.user(org, Role.COMPLIANCE)
    pair = world.login(org, user)
    logout = client.post("/api/v1/auth/logout", headers=bearer(pair["access_token"]))
    assert logout.status_code == 204
    assert client.get("/api/v1/me", headers=bearer(pair["access_token"])).status_code == 401
    assert client.post(REFRESH, json={"refresh_token": pair["refresh_token"]}).status_code == 401


def test_access_token_expires_on_the_app_clock(world: World, client, clock):
    org = world.org()
    user = world.user(org, Role.NURSE)
    pair = world.login(org, user)
    clock.advance(seconds=pair["expires_in"] - 1)
    assert client.get("/api/v1/me", headers=bearer(pair["access_token"])).status_code == 200
    clock.advance(seconds=1)
    response = client.get("/api/v1/me", headers=bearer(pair["access_token"]))
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthenticated"


def test_refresh_token_expires(world: World, client, clock, app):
    org = world.org()
    pair = world.login(org, world.user(org, Role.NURSE))
    clock.advance(seconds=app.config["REFRESH_TOKEN_SECONDS"])
    assert client.post(REFRESH, json={"refresh_token": pair["refresh_token"]}).status_code == 401


@pytest.mark.parametrize("token", ["", "not-a-jwt", "a.b.c"])
def test_garbage_bearer_tokens_are_refused(client, token):
    response = client.get("/api/v1/me", headers=bearer(token))
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthenticated"


def test_token_signed_with_another_key_is_refused(world: World, client):
    import jwt

    org = world.org()
    user = world.user(org, Role.ADMIN)
    pair = world.login(org, user)
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    forged = jwt.encode(claims, b"x" * 32, algorithm="HS256")
    assert client.get("/api/v1/me", headers=bearer(forged)).status_code == 401


def test_login_rehashes_when_argon2_parameters_change(world: World):
    org = world.org()
    user = world.user(org, Role.NURSE)
    weak = PasswordHasher(time_cost=1, memory_cost=512, parallelism=1)
    weak_hash = weak.hash(PASSWORD)
    user.password_hash = weak_hash
    world.commit()
    world.login(org, user)
    world.session.expire_all()
    refreshed = world.session.get(User, user.id).password_hash
    assert refreshed != weak_hash
    assert not world.rt.passwords.check_needs_rehash(refreshed)
    assert world.rt.passwords.verify(refreshed, PASSWORD)


def _fail(client, org_slug: str, username: str, address: str = "10.0.0.1"):
    return client.post(LOGIN, json={"org": org_slug, "username": username, "password": "nope"},
                       environ_base={"REMOTE_ADDR": address})


def test_account_locks_after_limit_even_with_the_right_password(world: World, client, app,
                                                                 clock):
    org = world.org()
    user = world.user(org, Role.NURSE)
    limit = app.config["LOGIN_MAX_PER_ACCOUNT"]
    for _ in range(limit):
        assert _fail(client, org.slug, user.username).status_code == 401
    locked = client.post(LOGIN, json={"org": org.slug, "username": user.username,
                                      "password": PASSWORD})
    assert locked.status_code == 429
    assert locked.json["error"]["code"] == "locked_out"
    assert 0 < int(locked.headers["Retry-After"]) <= app.config["LOGIN_WINDOW_SECONDS"] + 1
    clock.advance(seconds=app.config["LOGIN_WINDOW_SECONDS"])
    assert world.login(org, user)["access_token"]


def test_success_resets_the_account_count(world: World, client, app):
    org = world.org()
    user = world.user(org, Role.NURSE)
    for _ in range(app.config["LOGIN_MAX_PER_ACCOUNT"] - 1):
        _fail(client, org.slug, user.username)
    world.login(org, user)
    assert _fail(client, org.slug, user.username).status_code == 401


def test_address_locks_across_accounts(world: World, client, app):
    org = world.org()
    limit = app.config["LOGIN_MAX_PER_ADDRESS"]
    for i in range(limit):
        _fail(client, org.slug, f"guess-{i}", address="203.0.113.7")
    user = world.user(org, Role.NURSE)
    blocked = client.post(LOGIN, json={"org": org.slug, "username": user.username,
                                       "password": PASSWORD},
                          environ_base={"REMOTE_ADDR": "203.0.113.7"})
    assert blocked.status_code == 429
    other = client.post(LOGIN, json={"org": org.slug, "username": user.username,
                                     "password": PASSWORD},
                        environ_base={"REMOTE_ADDR": "203.0.113.8"})
    assert other.status_code == 200


def test_lockout_holds_across_two_app_instances(database_url, instance_path, clock):
    """Two apps (two gunicorn workers) on one database share the failure count."""
    first = make_app(database_url, instance_path, clock)
    second = make_app(database_url, instance_path, clock)
    world = World(first)
    slug = f"shared-{uuid.uuid4().hex[:8]}"
    org = world.org(slug)
    user = world.user(org, Role.NURSE)
    limit = first.config["LOGIN_MAX_PER_ACCOUNT"]
    workers = [first.test_client(), second.test_client()]
    for attempt in range(limit):
        assert _fail(workers[attempt % 2], slug, user.username).status_code == 401
    for worker in workers:
        response = worker.post(LOGIN, json={"org": slug, "username": user.username,
                                            "password": PASSWORD})
        assert response.status_code == 429
    world.session.close()
    for app in (first, second):
        app.extensions["vigil.db"].engine.dispose()


def test_a_token_checked_before_is_refused_at_once_when_its_session_device_or_user_ends(
        world: World, client):
    # A token's signature is checked once per process; its session, device and user every time.
    import jwt

    org = world.org()
    nurse = world.user(org, Role.NURSE)
    device_id, _ = world.device(org, nurse)
    on_phone = [world.login(org, nurse, device_id)["access_token"] for _ in range(2)]
    elsewhere = world.login(org, nurse)["access_token"]

    def me(token: str) -> int:
        return client.get("/api/v1/me", headers=bearer(token)).status_code

    assert [me(token) for token in [*on_phone, elsewhere]] == [200, 200, 200]
    now = world.rt.clock.now()
    family_id = uuid.UUID(jwt.decode(on_phone[0], options={"verify_signature": False})["sid"])
    world.session.execute(update(TokenFamily).where(TokenFamily.id == family_id)
                          .values(revoked_at=now, revoked_reason="logout"))
    world.commit()
    assert [me(on_phone[0]), me(on_phone[1])] == [401, 200]
    world.session.execute(update(Device).where(Device.id == device_id).values(revoked_at=now))
    world.commit()
    assert [me(on_phone[1]), me(elsewhere)] == [401, 200]
    world.session.execute(update(User).where(User.id == nurse.id).values(active=False))
    world.commit()
    assert me(elsewhere) == 401

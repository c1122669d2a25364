"""HTTP endpoints for devices."""

from __future__ import annotations

import uuid

from flask.views import MethodView

from backend import db, examples
from backend.accounts.models import Role
from backend.api import Blueprint
from backend.auth.guard import current_caller, requires
from backend.devices import service
from backend.devices.schemas import DeviceCreateSchema, DeviceSchema
from backend.runtime import runtime

blp = Blueprint("devices", __name__, url_prefix="/devices",
                description="Nurses' phones and the Ed25519 keys that sign their events.")


@blp.route("")
class Devices(MethodView):
    """Devices of the organisation (a nurse sees her own)."""

    @requires(Role.ADMIN, Role.COMPLIANCE, Role.NURSE)
    @blp.response(200, DeviceSchema(many=True))
    def get(self):
        """List devices: all of the organisation's, or a nurse's own."""
        return service.visible_devices(db.session(), current_caller())

    @requires(Role.NURSE)
    @blp.arguments(DeviceCreateSchema, example=examples.DEVICE)
    @blp.response(201, DeviceSchema)
    @blp.refusal(403, "`mfa_required`: where the organisation asks nurses for a second factor, "
                 "registering a phone needs one proved within its step-up window (details."
                 "action `device.register`): confirm one at POST /auth/step-up and send again.")
    @blp.refusal(409, "`conflict`: the public key is already registered, or another device "
                 "has this id.")
    def post(self, body):
        """Register the caller's phone with its Ed25519 public key."""
        session = db.session()
        device = service.register(session, runtime(), current_caller(),
                                  public_key=body["public_key"], label=body["label"],
                                  device_id=body["id"])
        return device


@blp.route("/<uuid:device_id>")
class DeviceDetail(MethodView):
    """One device."""

    @requires(Role.ADMIN, Role.NURSE)
    @blp.response(204)
    def delete(self, device_id: uuid.UUID):
        """Revoke a device (an admin any, a nurse her own); its sessions end at once."""
        session = db.session()
        service.revoke(session, runtime(), current_caller(), device_id)

"""Request and response bodies for users and the caller's own account."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from backend.accounts.models import Role

ROLE_FIELD = {"enum": Role, "by_value": True,
              "metadata": {"description": "admin, prescriber, pharmacist, nurse or compliance."}}


class OrganisationSchema(Schema):
    """An organisation as its members see it."""

    id = fields.UUID(dump_only=True)
    slug = fields.String()
    name = fields.String()
    dea_registration = fields.String()
    timezone = fields.String()


class UserSchema(Schema):
    """A user, without secrets."""

    id = fields.UUID(dump_only=True)
    username = fields.String()
    display_name = fields.String()
    role = fields.Enum(**ROLE_FIELD)
    active = fields.Boolean()
    created_at = fields.AwareDateTime()
    deactivated_at = fields.AwareDateTime(allow_none=True)


class MeSchema(Schema):
    """The caller: user, role, organisation, and the device the session is bound to."""

    user = fields.Nested(UserSchema)
    organisation = fields.Nested(OrganisationSchema)
    device_id = fields.UUID(allow_none=True)


class UserCreateSchema(Schema):
    """What an admin sends to add a user."""

    username = fields.String(required=True, validate=validate.Length(1, 150))
    display_name = fields.String(required=True, validate=validate.Length(1, 200))
    role = fields.Enum(required=True, **ROLE_FIELD)
    password = fields.String(required=True, load_only=True, validate=validate.Length(12, 1024),
                             metadata={"description": "At least 12 characters."})


class UserUpdateSchema(Schema):
    """What an admin may change on a user."""

    role = fields.Enum(**ROLE_FIELD)
    active = fields.Boolean(metadata={"description": "false deactivates; history is kept."})
    display_name = fields.String(validate=validate.Length(1, 200))

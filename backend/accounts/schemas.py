"""Request and response bodies for users and the caller's own account."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from backend import bounded
from backend.accounts.models import Role

ROLE_FIELD = {"enum": Role, "by_value": True,
              "metadata": {"description": "admin, prescriber, pharmacist, nurse or compliance."}}


# The states, district and territories a DEA registration's address may be in (USPS codes).
STATES = ("AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "HI", "ID", "IL",
          "IN", "IA", "KS", "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE",
          "NV", "NH", "NJ", "NM", "NY", "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD",
          "TN", "TX", "UT", "VT", "VA", "WA", "WV", "WI", "WY", "AS", "GU", "MP", "PR", "VI")
ZIP = r"^\d{5}(-\d{4})?$"
PHONE = r"^\+?[0-9 ().-]{7,30}$"


class OrganisationSchema(Schema):
    """An organisation as its members see it: the registrant every DEA record names."""

    id = fields.UUID(dump_only=True)
    slug = fields.String()
    name = fields.String(metadata={"description": "The registrant's name, as registered."})
    dea_registration = fields.String()
    dea_expires_on = fields.Date(allow_none=True, metadata={
        "description": "When the DEA registration expires."})
    address_line = fields.String(allow_none=True, metadata={
        "description": "The registered address (street), printed on every DEA record."})
    city = fields.String(allow_none=True)
    state = fields.String(allow_none=True, metadata={"description": "USPS two-letter code."})
    postal_code = fields.String(allow_none=True)
    phone = fields.String(allow_none=True)
    timezone = fields.String()


def _optional(length: int, **extra) -> fields.String:
    return fields.String(allow_none=True, validate=validate.And(
        validate.Length(max=length), *extra.pop("validate", ())), **extra)


class RegistrantSchema(Schema):
    """What an admin may change of the registrant: name, registration and address."""

    name = fields.String(validate=validate.Length(1, 200))
    dea_registration = fields.String(validate=validate.Length(9, 9), metadata={
        "description": "2 letters then 7 digits with a valid check digit."})
    dea_expires_on = bounded.Date(allow_none=True, metadata={
        "description": "When the DEA registration expires; null clears it."})
    address_line = _optional(200)
    city = _optional(100)
    state = fields.String(allow_none=True, validate=validate.OneOf([*STATES, ""]), metadata={
        "description": "USPS two-letter code of a state, DC or a territory."})
    postal_code = _optional(10, validate=[validate.Regexp(f"{ZIP}|^$", error="a ZIP code: "
                                                                           "12345 or "
                                                                           "12345-6789")])
    phone = _optional(30, validate=[validate.Regexp(f"{PHONE}|^$", error="a phone number")])


class UserSchema(Schema):
    """A user, without secrets."""

    id = fields.UUID(dump_only=True)
    username = fields.String()
    display_name = fields.String()
    role = fields.Enum(**ROLE_FIELD)
    active = fields.Boolean()
    phone = fields.String(allow_none=True, metadata={
        "description": "How to reach them: the REMS monitoring form names the clinician's."})
    email = fields.String(allow_none=True)
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
    phone = fields.String(validate=validate.Regexp(PHONE, error="a phone number"))
    email = fields.Email(validate=validate.Length(max=254))


class UserUpdateSchema(Schema):
    """What an admin may change on a user."""

    role = fields.Enum(**ROLE_FIELD)
    active = fields.Boolean(metadata={"description": "false deactivates; history is kept."})
    display_name = fields.String(validate=validate.Length(1, 200))
    phone = fields.String(validate=validate.Regexp(f"{PHONE}|^$", error="a phone number"),
                          metadata={"description": "Empty clears it."})
    email = fields.String(validate=[validate.Length(max=254),
                                    validate.Regexp(r"^$|^[^@\s]+@[^@\s]+\.[^@\s]+$",
                                                    error="an email address")],
                          metadata={"description": "Empty clears it."})

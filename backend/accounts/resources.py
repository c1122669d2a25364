"""HTTP endpoints for users and the caller's own account."""

from __future__ import annotations

import uuid

from flask.views import MethodView

from backend import db, examples
from backend.accounts import service
from backend.accounts.models import Organisation, Role
from backend.accounts.schemas import (
    MeSchema,
    OrganisationSchema,
    RegistrantSchema,
    UserCreateSchema,
    UserSchema,
    UserUpdateSchema,
)
from backend.api import Blueprint
from backend.auth.guard import current_caller, requires
from backend.runtime import runtime

blp = Blueprint("accounts", __name__, description="Users and the caller's own account.")
ALL_ROLES = tuple(Role)


@blp.route("/me")
class Me(MethodView):
    """The caller's own account."""

    @requires(*ALL_ROLES)
    @blp.response(200, MeSchema)
    def get(self):
        """Return the caller's user, role and organisation."""
        caller = current_caller()
        user, organisation = service.me(db.session(), caller)
        return {"user": user, "organisation": organisation, "device_id": caller.device_id}


@blp.route("/organisation")
class Registrant(MethodView):
    """The caller's organisation: the registrant that every DEA record names."""

    @requires(*ALL_ROLES)
    @blp.response(200, OrganisationSchema)
    def get(self):
        """Return the organisation's name, DEA registration, address and timezone."""
        caller = current_caller()
        return db.session().get(Organisation, caller.organisation_id)

    @requires(Role.ADMIN)
    @blp.arguments(RegistrantSchema)
    @blp.response(200, OrganisationSchema)
    @blp.refusal(403, "`mfa_required`: a change needs a second factor proved within the "
                 "step-up window (details.action `organisation.registrant`).")
    def patch(self, body):
        """Change the registrant's name, DEA registration, its expiry or the address; audited
        with each field before and after. Omitted fields stay; null or empty clears an
        optional one."""
        return service.update_registrant(db.session(), runtime(), current_caller(), body)


@blp.route("/users")
class Users(MethodView):
    """The users of the caller's organisation."""

    @requires(Role.ADMIN)
    @blp.response(200, UserSchema(many=True))
    def get(self):
        """List the organisation's users, active and deactivated."""
        return service.list_users(db.session(), current_caller())

    @requires(Role.ADMIN)
    @blp.arguments(UserCreateSchema, example=examples.USER)
    @blp.response(201, UserSchema)
    @blp.refusal(409, "`conflict`: the username is taken.")
    def post(self, body):
        """Add a user with one role."""
        caller = current_caller()
        session = db.session()
        user = service.create_user(session, runtime(), caller,
                                   organisation_id=caller.organisation_id, **body)
        return user


@blp.route("/users/<uuid:user_id>")
class UserDetail(MethodView):
    """One user of the caller's organisation."""

    @requires(Role.ADMIN)
    @blp.arguments(UserUpdateSchema)
    @blp.response(200, UserSchema)
    @blp.refusal(409, "`conflict`: an admin cannot deactivate or demote herself.")
    def patch(self, body, user_id: uuid.UUID):
        """Change a user's role, name or active flag; deactivation revokes their sessions."""
        session = db.session()
        user = service.update_user(session, runtime(), current_caller(), user_id,
                                   service.UserChange(**body))
        return user

"""Request and response bodies for an organisation's second-factor policy."""

from __future__ import annotations

from marshmallow import Schema, fields, post_load, validate

from backend import bounded
from backend.accounts.schemas import ROLE_FIELD
from backend.mfa.policy import MAX_GRACE_DAYS, STEP_UP_SECONDS
from backend.mfa.policy_service import Settings

STEP_UP_MINUTES = (STEP_UP_SECONDS[0] // 60, STEP_UP_SECONDS[1] // 60)


class SettingsSchema(Schema):
    """The policy an admin sets; every field is required (the policy is replaced whole)."""

    second_factor_for_nurses = fields.Boolean(required=True, metadata={
        "description": "Nurses need a second factor too: to sign in on their phone and to "
                       "register it. Desk roles always need one."})
    enrolment_grace_days = bounded.Integer(required=True, validate=validate.Range(
        0, MAX_GRACE_DAYS), metadata={
        "description": "Days a user may sign in without a factor, counted from their account's "
                       "creation or the policy's last change, whichever is later; 0: at once."})
    step_up_minutes = bounded.Integer(required=True, validate=validate.Range(*STEP_UP_MINUTES),
                                      metadata={
        "description": "How recently a factor must have been proved for a sensitive action "
                       "(signing a plan, destroying or writing off stock, a rule's mode, "
                       "dismissing a critical flag, this policy)."})

    @post_load
    def settings(self, values: dict, **_kwargs) -> Settings:
        """Return the loaded values as the service takes them."""
        return Settings(**values)


class UnenrolledSchema(Schema):
    """A user the policy covers who has no confirmed second factor."""

    user_id = fields.UUID(attribute="user.id")
    username = fields.String(attribute="user.username")
    display_name = fields.String(attribute="user.display_name")
    role = fields.Enum(attribute="user.role", **ROLE_FIELD)
    due_at = fields.AwareDateTime(metadata={
        "description": "From then on, signing in asks the user to enrol before anything else."})
    overdue = fields.Boolean()


class SecurityPolicySchema(SettingsSchema):
    """The organisation's second-factor policy, and who has yet to enrol under it."""

    changed_at = fields.AwareDateTime(allow_none=True, metadata={
        "description": "The policy's last change: every user's grace counts from then at "
                       "the earliest."})
    without_factor = fields.List(fields.Nested(UnenrolledSchema), metadata={
        "description": "Active users who need a factor and have none confirmed, the soonest "
                       "due first."})

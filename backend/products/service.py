"""Keep the organisation's catalogue of drug products."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.audit import service as audit
from backend.auth.caller import Caller
from backend.errors import Conflict, InvalidField
from backend.products.models import DrugProduct
from backend.runtime import Runtime
from backend.tenancy import owned

ROUTES = ("IV", "IM", "SC", "intranasal")
FORMS = {"vial": "mL", "ampoule": "mL", "prefilled_syringe": "mL", "nasal_device": "device"}
SCHEDULES = ("II", "III", "IV", "V")


def add(session: Session, rt: Runtime, caller: Caller, *, name: str, active_ingredient: str,
        dea_schedule: str, form: str, ug_per_unit: int, units_per_container: Decimal,
        allowed_routes: list[str], home_administration_allowed: bool,
        product_id: uuid.UUID | None = None) -> DrugProduct:
    """Add a product to the caller's organisation's catalogue."""
    if form not in FORMS:
        raise InvalidField("form", f"one of {', '.join(FORMS)}")
    if unknown := set(allowed_routes) - set(ROUTES):
        raise InvalidField("allowed_routes", f"unknown routes {sorted(unknown)}")
    if session.scalar(select(DrugProduct.id).where(
            DrugProduct.organisation_id == caller.organisation_id, DrugProduct.name == name)):
        raise Conflict(f"A product named {name!r} already exists.")
    product = DrugProduct(
        id=product_id or uuid.uuid4(), organisation_id=caller.organisation_id, name=name,
        active_ingredient=active_ingredient, dea_schedule=dea_schedule, form=form,
        unit=FORMS[form], ug_per_unit=ug_per_unit, units_per_container=units_per_container,
        allowed_routes=sorted(set(allowed_routes)),
        home_administration_allowed=home_administration_allowed, created_at=rt.clock.now())
    session.add(product)
    session.flush()
    audit.record(session, product.created_at, caller, "product.create", "drug_product",
                 product.id)
    return product


def catalogue(session: Session, caller: Caller) -> list[DrugProduct]:
    """Return the organisation's products."""
    return list(session.scalars(select(DrugProduct).where(
        DrugProduct.organisation_id == caller.organisation_id).order_by(DrugProduct.name)))


def get(session: Session, caller: Caller, product_id: uuid.UUID) -> DrugProduct:
    """Return one of the organisation's products, or raise NotFound."""
    return owned(session, caller, DrugProduct, product_id, what="product")

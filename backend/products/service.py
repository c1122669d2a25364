"""Keep the organisation's catalogue of drug products."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.audit import service as audit
from backend.auth.caller import Caller
from backend.errors import Conflict, InvalidField
from backend.products import ndc
from backend.products.models import DrugProduct
from backend.runtime import Runtime
from backend.tenancy import owned

ROUTES = ("IV", "IM", "SC", "intranasal")
FORMS = {"vial": "mL", "ampoule": "mL", "prefilled_syringe": "mL", "nasal_device": "device"}
SCHEDULES = ("II", "III", "IV", "V")


def add(session: Session, rt: Runtime, caller: Caller, *, name: str, active_ingredient: str,
        dea_schedule: str, form: str, ug_per_unit: int, units_per_container: Decimal,
        allowed_routes: list[str], home_administration_allowed: bool,
        product_id: uuid.UUID | None = None, ndc: str | None = None,
        package_description: str | None = None, rxnorm_code: str | None = None) -> DrugProduct:
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
        home_administration_allowed=home_administration_allowed, created_at=rt.clock.now(),
        ndc=_ndc(ndc), package_description=package_description, rxnorm_code=rxnorm_code)
    session.add(product)
    session.flush()
    audit.record(session, product.created_at, caller, "product.create", "drug_product",
                 product.id)
    return product


def _ndc(text: str | None) -> str | None:
    if text is None:
        return None
    if (code := ndc.normalise(text)) is None:
        raise InvalidField("ndc", ndc.PROBLEM)
    return code


# What may be set on a stocked product: its form, strength and size are what its ledger
# entries were counted in, so they never change.
CODES = ("ndc", "package_description", "rxnorm_code")


def update(session: Session, rt: Runtime, caller: Caller, product_id: uuid.UUID,
           change: dict[str, str | None]) -> DrugProduct:
    """Set or correct a product's NDC, package description or RxNorm code; audited."""
    product = get(session, caller, product_id)
    if "ndc" in change:
        change["ndc"] = _ndc(change["ndc"])
    before = {name: getattr(product, name) for name in CODES}
    for name, value in change.items():
        setattr(product, name, value)
    session.flush()
    audit.record(session, rt.clock.now(), caller, "product.update", "drug_product", product.id,
                 detail={name: {"from": before[name], "to": getattr(product, name)}
                         for name in CODES if before[name] != getattr(product, name)})
    return product


def catalogue(session: Session, caller: Caller) -> list[DrugProduct]:
    """Return the organisation's products."""
    return list(session.scalars(select(DrugProduct).where(
        DrugProduct.organisation_id == caller.organisation_id).order_by(DrugProduct.name)))


def get(session: Session, caller: Caller, product_id: uuid.UUID) -> DrugProduct:
    """Return one of the organisation's products, or raise NotFound."""
    return owned(session, caller, DrugProduct, product_id, what="product")

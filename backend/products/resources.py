"""HTTP endpoints for the drug catalogue."""

from __future__ import annotations

import uuid

from flask.views import MethodView

from backend import db, examples
from backend.accounts.models import Role
from backend.api import Blueprint
from backend.auth.guard import current_caller, requires
from backend.products import service
from backend.products.schemas import ProductSchema, ProductUpdateSchema
from backend.runtime import runtime

blp = Blueprint("products", __name__, url_prefix="/products",
                description="The organisation's controlled drug products.")


@blp.route("")
class Products(MethodView):
    """The catalogue."""

    @requires(*Role)
    @blp.response(200, ProductSchema(many=True))
    def get(self):
        """List the organisation's products."""
        return service.catalogue(db.session(), current_caller())

    @requires(Role.ADMIN, Role.PHARMACIST)
    @blp.arguments(ProductSchema, example=examples.PRODUCT)
    @blp.response(201, ProductSchema)
    @blp.refusal(409, "`conflict`: a product of this name, or another under this id, exists.")
    def post(self, body):
        """Add a product."""
        session = db.session()
        product_id = body.pop("id")
        product = service.add(session, runtime(), current_caller(), product_id=product_id, **body)
        return product


@blp.route("/<uuid:product_id>")
class Product(MethodView):
    """One product of the catalogue."""

    @requires(Role.ADMIN, Role.PHARMACIST)
    @blp.arguments(ProductUpdateSchema)
    @blp.response(200, ProductSchema)
    def patch(self, body, product_id: uuid.UUID):
        """Set or correct the product's NDC, package description or RxNorm code; its form,
        strength and size never change (the ledger counted in them). Audited."""
        return service.update(db.session(), runtime(), current_caller(), product_id, body)

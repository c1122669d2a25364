"""The organisation's catalogue of controlled drug products."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import JSON, ForeignKey, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, new_id


class DrugProduct(Base):
    """A product as stocked: strength per unit (µg per mL or per device) and container size."""

    __tablename__ = "drug_product"
    __table_args__ = (UniqueConstraint("organisation_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    active_ingredient: Mapped[str] = mapped_column(String(100))
    dea_schedule: Mapped[str] = mapped_column(String(3))
    form: Mapped[str] = mapped_column(String(30))
    unit: Mapped[str] = mapped_column(String(10))
    ug_per_unit: Mapped[int]
    units_per_container: Mapped[Decimal] = mapped_column(Numeric(10, 3))
    allowed_routes: Mapped[list[str]] = mapped_column(JSON)
    home_administration_allowed: Mapped[bool]
    created_at: Mapped[datetime]
    # The FDA National Drug Code as 11 digits (5-4-2, no hyphens); null for products added
    # before NDCs were kept, which DEA records then show blank.
    ndc: Mapped[str | None] = mapped_column(String(11))
    package_description: Mapped[str | None] = mapped_column(String(200))
    # The RxNorm concept (RxCUI) a FHIR export codes the product with.
    rxnorm_code: Mapped[str | None] = mapped_column(String(12))

    @property
    def container_ug(self) -> int:
        """Return the micrograms in one full container."""
        return int(self.ug_per_unit * self.units_per_container)

"""A quantity of a product as DEA records state it: µg, mg, dispensing units and containers."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from backend.products.models import DrugProduct

THOUSANDTHS = Decimal("0.001")
# What one container of each form is called on a record ("10 mL per vial").
CONTAINERS = {"vial": "vial", "ampoule": "ampoule", "prefilled_syringe": "syringe",
              "nasal_device": "device"}


@dataclass(frozen=True)
class Amount:
    """One quantity in every unit a record needs; `containers` only when a whole number."""

    quantity_ug: int
    quantity_mg: Decimal
    quantity_units: Decimal
    unit: str
    containers: int | None


def milligrams(quantity_ug: int) -> Decimal:
    """Return micrograms as exact milligrams with three places."""
    return Decimal(quantity_ug).scaleb(-3).quantize(THOUSANDTHS)


def amount(product: DrugProduct, quantity_ug: int) -> Amount:
    """Return `quantity_ug` of `product` in µg, mg, mL or devices, and whole containers."""
    units = (Decimal(quantity_ug) / product.ug_per_unit).quantize(THOUSANDTHS)
    containers, part = divmod(Decimal(quantity_ug), Decimal(product.container_ug))
    return Amount(quantity_ug=quantity_ug, quantity_mg=milligrams(quantity_ug),
                  quantity_units=units, unit=product.unit,
                  containers=int(containers) if part == 0 else None)


def _number(value: Decimal) -> str:
    return format(value.normalize(), "f")


def strength(product: DrugProduct) -> str:
    """Return the strength per dispensing unit, in mg and in µg ("50 mg/mL (50000 µg/mL)")."""
    per_unit = f"/{product.unit}"
    return (f"{_number(milligrams(product.ug_per_unit))} mg{per_unit} "
            f"({product.ug_per_unit} µg{per_unit})")


def container(product: DrugProduct) -> str:
    """Return what one container of the product is called."""
    return CONTAINERS.get(product.form, product.form)


def package(product: DrugProduct) -> str:
    """Return the package size with its unit ("10 mL per vial"), or the product's description."""
    size = f"{_number(product.units_per_container)} {product.unit} per {container(product)}"
    return f"{product.package_description} ({size})" if product.package_description else size

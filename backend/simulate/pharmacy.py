"""The pharmacy's part: receive stock, dispense each nurse's kit, take returns, count."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy.orm import Session

from backend.custody import counts
from backend.custody import service as custody
from backend.custody.ledger import VAULT, bag
from backend.custody.models import Kind
from backend.custody.reports import holdings
from backend.simulate.behaviour import Conduct
from backend.simulate.world import SUPPLIER, Nurse, Vial, World

# Vials per delivery, and per nurse the vault keeps before the morning's kits (a nurse takes
# at most three visits' vials and a spare). The 50 mg/mL vials are kept for plans that need
# them; the simulated plans all use 10 mg/mL, so they are received once.
DELIVERIES = {"k10": 240, "k50": 20}
KEPT_PER_NURSE = {"k10": 5, "k50": 0}
SHELF_LIFE = timedelta(days=540)
COUNT_REASON = "Shortfall at the weekly count; nurse questioned; reported to compliance."


@dataclass
class Lot:
    """A lot in the vault, as the pharmacist would find it on the shelf."""

    product: str
    lot: str
    expiry: date
    vault_ug: int


class Pharmacy:
    """What is physically in the vault, and the pharmacists' work on the ledger."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.lots: list[Lot] = []
        self.seals: dict[tuple[int, str, str], str] = {}
        self.invoices = 0

    def _pharmacist(self):
        return self.world.rng.choice(self.world.pharmacists)

    def _record(self, session: Session, kind: Kind, product: str, lot: Lot | Vial,
                quantity_ug: int, **fields) -> None:
        world = self.world
        custody.record(session, world.rt, self._pharmacist().caller, custody.EntryRequest(
            kind=kind, product_id=world.products[product].id, lot=lot.lot, expiry=lot.expiry,
            quantity_ug=quantity_ug, occurred_at=world.clock.now(), id=world.new_id(),
            **fields))

    def vials(self, product: str) -> int:
        """Return how many whole vials of `product` the vault holds."""
        container = self.world.products[product].container_ug
        return sum(lot.vault_ug // container for lot in self.lots if lot.product == product)

    def restock(self, session: Session) -> None:
        """Receive deliveries of each product until the vault holds enough for the kits."""
        world = self.world
        for product, delivered in DELIVERIES.items():
            wanted = KEPT_PER_NURSE[product] * len(world.nurses)
            while not self.vials(product) or self.vials(product) < wanted:
                today = world.clock.now().astimezone(world.zone).date()
                self.invoices += 1
                lot = Lot(product, f"{product.upper()}-{today:%y%m%d}-{self.invoices}",
                          today + SHELF_LIFE, delivered * world.products[product].container_ug)
                self._record(session, Kind.RECEIVE, product, lot, lot.vault_ug,
                             details={**SUPPLIER, "invoice": f"SIM-{self.invoices:05d}"})
                self.lots.append(lot)

    def dispense(self, session: Session, nurse: Nurse, vials: int, product: str) -> None:
        """Dispense a sealed kit of `vials` vials to the nurse's bag, oldest lots first."""
        container = self.world.products[product].container_ug
        today = self.world.clock.now().astimezone(self.world.zone).date()
        for lot in sorted(self.lots, key=lambda lot: (lot.expiry, lot.lot)):
            taken = min(vials, lot.vault_ug // container) if lot.product == product else 0
            if not taken:
                continue
            seal = f"SEAL-{nurse.index + 1:03d}-{today:%y%m%d}-{lot.lot}"
            self._record(session, Kind.DISPENSE, product, lot, taken * container,
                         nurse_id=nurse.user_id, details={"seal_id": seal})
            self.seals[nurse.index, product, lot.lot] = seal
            lot.vault_ug -= taken * container
            nurse.bag += [Vial(product, lot.lot, lot.expiry, container) for _ in range(taken)]
            vials -= taken
            if not vials:
                return
        raise RuntimeError(f"the vault ran out of {product}: raise DELIVERIES")

    def take_return(self, session: Session, nurse: Nurse, conduct: Conduct) -> None:
        """Take back the nurse's unopened vials, lot by lot, under each kit's seal."""
        now = self.world.clock.now()
        kept = {id(vial) for vial in conduct.kept(self.world.rng, nurse.bag, now)}
        returned: dict[tuple[str, str], list[Vial]] = defaultdict(list)
        for vial in nurse.bag:
            if id(vial) not in kept:
                returned[vial.product, vial.lot].append(vial)
        for (product, lot_name), vials in returned.items():
            quantity = sum(vial.content_ug for vial in vials)
            self._record(session, Kind.RETURN, product, vials[0], quantity,
                         nurse_id=nurse.user_id,
                         details={"seal_id": self.seals[nurse.index, product, lot_name]})
            next(lot for lot in self.lots if lot.lot == lot_name).vault_ug += quantity
        nurse.bag = []

    def count(self, session: Session) -> None:
        """Count the vault and every bag against the ledger, explaining any shortfall."""
        world = self.world
        shelf = defaultdict(int)
        for lot in self.lots:
            shelf[lot.product, lot.lot] += lot.vault_ug
        self._reconcile(session, VAULT, shelf)
        for nurse in world.nurses:
            found = defaultdict(int)
            for vial in nurse.bag:
                found[vial.product, vial.lot] += vial.content_ug
            self._reconcile(session, bag(nurse.user_id), found)

    def _reconcile(self, session: Session, holder: str,
                   found: dict[tuple[str, str], int]) -> None:
        world = self.world
        ids = {product.id: key for key, product in world.products.items()}
        now = world.clock.now()
        # The count sheet shows what the ledger expects; a difference is explained on it.
        expected = {(ids[h.product_id], h.lot): h.quantity_ug
                    for h in holdings(session, world.organisation_id, now, holder)}
        reasons = {lot: COUNT_REASON for key, lot in (expected.keys() | found.keys())
                   if expected.get((key, lot), 0) != found.get((key, lot), 0)}
        counts.reconcile(session, world.rt, self._pharmacist().caller, counts.CountRequest(
            holder=holder, counted_at=now, id=world.new_id(), reasons=reasons,
            counts=[counts.CountedLot(world.products[product].id, lot, quantity)
                    for (product, lot), quantity in sorted(found.items()) if quantity]))

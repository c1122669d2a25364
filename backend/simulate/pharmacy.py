"""The pharmacy's part: receive stock, dispense each nurse's kit, take returns, count, destroy.

Each delivery is received with what was ordered and invoiced; now and then the supplier ships
a few vials short and invoices what it shipped. Now and then a vial is found damaged on the
shelf and destroyed before two colleagues. A return is taken under its kit's seal; a seal
presented by mistake is refused and the kit taken under its own. An injected diverting
pharmacist (`behaviour.PharmacyDiverter`) works through the same calls.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy.orm import Session

from backend.custody import counts
from backend.custody import service as custody
from backend.custody.chain import signed_payload
from backend.custody.ledger import VAULT, bag
from backend.custody.models import CustodyEntry, Kind
from backend.custody.reports import holdings
from backend.simulate.behaviour import ADJUST_REASONS, DESTROY_METHODS, Conduct, PharmacyDiverter
from backend.simulate.world import SUPPLIER, Nurse, Person, Vial, World

# Vials per delivery, and per nurse the vault keeps before the morning's kits (a nurse takes
# at most three visits' vials and a spare). The 50 mg/mL vials are kept for plans that need
# them; the simulated plans all use 10 mg/mL, so they are received once.
DELIVERIES = {"k10": 240, "k50": 20}
KEPT_PER_NURSE = {"k10": 5, "k50": 0}
SHELF_LIFE = timedelta(days=540)
COUNT_REASON = "Shortfall at the weekly count; nurse questioned; reported to compliance."
# Honest noise: a delivery shipped short (and invoiced as shipped), a damaged vial destroyed.
SHORT_SHIPMENT_SHARE, DAMAGED_SHARE = 0.03, 0.03


@dataclass
class Lot:
    """A lot in the vault, as the pharmacist would find it on the shelf."""

    product: str
    lot: str
    expiry: date
    vault_ug: int


class Pharmacy:
    """What is physically in the vault, and the pharmacists' work on the ledger."""

    def __init__(self, world: World, diverter: PharmacyDiverter | None = None) -> None:
        self.world, self.diverter = world, diverter
        self.lots: list[Lot] = []
        self.seals: dict[tuple[int, str, str], str] = {}
        self.invoices = 0

    def _pharmacist(self, *, besides: Person | None = None) -> Person:
        return self.world.rng.choice([p for p in self.world.pharmacists if p is not besides])

    def _diverting(self) -> bool:
        return self.diverter is not None and self.diverter.active(self.world.clock.now())

    def _record(self, session: Session, kind: Kind, product: str, lot: Lot | Vial,
                quantity_ug: int, by: Person | None = None, **fields) -> CustodyEntry:
        world = self.world
        return custody.record(session, world.rt, (by or self._pharmacist()).caller,
                              custody.EntryRequest(
            kind=kind, product_id=world.products[product].id, lot=lot.lot, expiry=lot.expiry,
            quantity_ug=quantity_ug, occurred_at=world.clock.now(), id=world.new_id(),
            **fields))

    def vials(self, product: str) -> int:
        """Return how many whole vials of `product` the vault holds."""
        container = self.world.products[product].container_ug
        return sum(lot.vault_ug // container for lot in self.lots if lot.product == product)

    def restock(self, session: Session) -> None:
        """Receive deliveries of each product until the vault holds enough for the kits."""
        world, rng = self.world, self.world.rng
        for product, delivered in DELIVERIES.items():
            wanted = KEPT_PER_NURSE[product] * len(world.nurses)
            container = world.products[product].container_ug
            while not self.vials(product) or self.vials(product) < wanted:
                today = world.clock.now().astimezone(world.zone).date()
                self.invoices += 1
                shipped = delivered - (rng.randint(1, 3) if product == "k10"
                                       and rng.random() < SHORT_SHIPMENT_SHARE else 0)
                receiver, short = self._pharmacist(), 0
                if (product == "k10" and self._diverting()
                        and rng.random() < self.diverter.receives):
                    receiver, short = self.diverter.pharmacist, rng.randint(1, 4)
                lot = Lot(product, f"{product.upper()}-{today:%y%m%d}-{self.invoices}",
                          today + SHELF_LIFE, (shipped - short) * container)
                entry = self._record(
                    session, Kind.RECEIVE, product, lot, lot.vault_ug, by=receiver,
                    **_quantities(delivered * container, shipped * container,
                                  {**SUPPLIER, "invoice": f"SIM-{self.invoices:05d}"}))
                if short:
                    self.diverter.acted(world.clock.now(), entry.id, "under_received_ug",
                                        short * container)
                self.lots.append(lot)

    def midday(self, session: Session) -> None:
        """A vial found damaged now and then; the diverter's own work at the shelf."""
        rng = self.world.rng
        if rng.random() < DAMAGED_SHARE:
            self._destroy(session, self._pharmacist())
        if not self._diverting():
            return
        diverter = self.diverter
        if rng.random() < diverter.skims:
            # Off the shelf and into her pocket: the count will be short.
            lot = self._fullest("k10")
            container = self.world.products["k10"].container_ug
            lot.vault_ug -= container
            diverter.pattern.act(self.world.clock.now(), user_ids=diverter.pharmacist.user_id)
            diverter.pattern.add("taken_ug", container)
        if rng.random() < diverter.destroys:
            self._destroy(session, diverter.pharmacist)

    def _fullest(self, product: str) -> Lot:
        return max((lot for lot in self.lots if lot.product == product),
                   key=lambda lot: (lot.vault_ug, lot.lot))

    def _destroy(self, session: Session, by: Person) -> None:
        """Destroy one vial found damaged, before two other pharmacists who sign on phones."""
        world, product = self.world, "k10"
        lot, container = self._fullest(product), world.products[product].container_ug
        if lot.vault_ug < container:
            return
        witnesses = world.rng.sample([p for p in world.pharmacists if p is not by], 2)
        entry_id, now = world.new_id(), world.clock.now()
        details = {"method": world.rng.choice(DESTROY_METHODS)}
        movement = signed_payload({
            "id": entry_id, "kind": "destroy", "product_id": world.products[product].id,
            "lot": lot.lot, "expiry": lot.expiry, "quantity_ug": container,
            "from_holder": VAULT, "to_holder": "destruction", "visit_id": None,
            "details": details, "occurred_at": now})
        entry = custody.record(session, world.rt, by.caller, custody.EntryRequest(
            kind=Kind.DESTROY, product_id=world.products[product].id, lot=lot.lot,
            expiry=lot.expiry, quantity_ug=container, occurred_at=now, id=entry_id,
            details=details, witnesses=[custody.Witness(
                w.user_id, w.device_id, w.phone.sign(movement)) for w in witnesses]))
        lot.vault_ug -= container
        if self._diverting() and by is self.diverter.pharmacist:
            # Into her pocket, not the destruction bin: the colleagues signed without looking.
            self.diverter.acted(now, entry.id, "destroyed_kept_ug", container)

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
        world, now = self.world, self.world.clock.now()
        kept = {id(vial) for vial in conduct.kept(world.rng, nurse.bag, now)}
        returned: dict[tuple[str, str], list[Vial]] = defaultdict(list)
        for vial in nurse.bag:
            if id(vial) not in kept:
                returned[vial.product, vial.lot].append(vial)
        pharmacist = self._pharmacist()
        first = True
        for (product, lot_name), vials in returned.items():
            quantity = sum(vial.content_ug for vial in vials)
            seal = self.seals[nurse.index, product, lot_name]
            if first and conduct.wrong_seal(world.rng, now):
                self._refused_return(session, nurse, conduct, product, vials[0], quantity,
                                     pharmacist, seal)
                if conduct.insists(world.rng, now):
                    self._refused_return(session, nurse, conduct, product, vials[0],
                                         quantity, pharmacist, seal)
            first = False
            self._record(session, Kind.RETURN, product, vials[0], quantity, by=pharmacist,
                         nurse_id=nurse.user_id, details={"seal_id": seal})
            next(lot for lot in self.lots if lot.lot == lot_name).vault_ug += quantity
        nurse.bag = []

    def _refused_return(self, session: Session, nurse: Nurse, conduct: Conduct, product: str,
                        vial: Vial, quantity: int, pharmacist: Person, seal: str) -> None:
        """Present the return under a seal not of a kit in her bag: a colleague's kit's, or
        one never issued."""
        rng, today = self.world.rng, self.world.clock.now().astimezone(self.world.zone).date()
        others = sorted(other for (index, _, _), other in self.seals.items()
                        if index != nurse.index)
        wrong = (rng.choice(others) if others and rng.random() < 0.5 else
                 f"SEAL-{nurse.index + 1:03d}-{today:%y%m%d}-{rng.randint(100, 999)}")
        try:
            with session.begin_nested():
                self._record(session, Kind.RETURN, product, vial, quantity, by=pharmacist,
                             nurse_id=nurse.user_id, details={"seal_id": wrong})
        except custody.SealMismatch:
            conduct.refused(self.world.clock.now(), wrong)
        else:
            raise RuntimeError(f"a return under the wrong seal {wrong} was accepted")

    def count(self, session: Session) -> None:
        """Count the vault and every bag against the ledger, explaining any shortfall.

        The vault is counted by one pharmacist (the diverter, once she has begun: she sees to
        it), the bags by another.
        """
        world = self.world
        counter = self.diverter.pharmacist if self._diverting() else self._pharmacist()
        shelf = defaultdict(int)
        for lot in self.lots:
            shelf[lot.product, lot.lot] += lot.vault_ug
        made = self._reconcile(session, VAULT, shelf, counter)
        if counter is getattr(self.diverter, "pharmacist", None) and self._diverting():
            for line in made.lots:
                if line.adjustment_id is not None:
                    self.diverter.acted(world.clock.now(), line.adjustment_id,
                                        "adjusted_down_ug", -line.difference_ug)
        bags = self._pharmacist(besides=counter)
        for nurse in world.nurses:
            found = defaultdict(int)
            for vial in nurse.bag:
                found[vial.product, vial.lot] += vial.content_ug
            self._reconcile(session, bag(nurse.user_id), found, bags)

    def _reconcile(self, session: Session, holder: str, found: dict[tuple[str, str], int],
                   counter: Person) -> counts.Reconciliation:
        world = self.world
        ids = {product.id: key for key, product in world.products.items()}
        now = world.clock.now()
        # The count sheet shows what the ledger expects; a difference is explained on it.
        expected = {(ids[h.product_id], h.lot): h.quantity_ug
                    for h in holdings(session, world.organisation_id, now, holder)}
        reason = (world.rng.choice(ADJUST_REASONS)
                  if holder == VAULT and counter is getattr(self.diverter, "pharmacist", None)
                  else COUNT_REASON)
        reasons = {lot: reason for key, lot in (expected.keys() | found.keys())
                   if expected.get((key, lot), 0) != found.get((key, lot), 0)}
        return counts.reconcile(session, world.rt, counter.caller, counts.CountRequest(
            holder=holder, counted_at=now, id=world.new_id(), reasons=reasons,
            counts=[counts.CountedLot(world.products[product].id, lot, quantity)
                    for (product, lot), quantity in sorted(found.items()) if quantity]))


def _quantities(ordered_ug: int, invoiced_ug: int, details: dict) -> dict:
    """Return a receipt's details with what was ordered and invoiced, as the API stores them."""
    return {"details": {**details, "ordered_ug": ordered_ug, "invoiced_ug": invoiced_ug}}

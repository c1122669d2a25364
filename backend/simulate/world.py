"""Build the simulated organisation through the services: staff, phones, products, patients.

Everything is fictitious (names, record numbers, homes scattered around Chicago's Loop) and
drawn from one `random.Random(seed)`: client-made ids and phone keys too, so a seed rebuilds
the same world. Server-made ids (users, visits) differ between runs; nothing depends on them.
"""

from __future__ import annotations

import base64
import math
import random
import uuid
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from argon2 import PasswordHasher, Type
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy.orm import Session

from backend.accounts import service as accounts
from backend.accounts.models import Role
from backend.auth.caller import Caller, FactorUse
from backend.clock import FixedClock
from backend.devices import service as devices
from backend.devices.signatures import canonical_bytes
from backend.patients import service as patients
from backend.products import service as products
from backend.runtime import Runtime
from backend.simulate import vitals
from backend.simulate.truth import Truth

# Fictitious registrations with valid check digits; no real number appears here.
ORG_DEA = "FS0000000"
SUPPLIER = {"supplier_name": "Simulated Wholesale Inc.", "supplier_address": "1 Depot Rd",
            "supplier_dea": "RW0000000"}
TIMEZONE = "America/Chicago"
CENTRE = (41.8781, -87.6298)
METRES_PER_DEGREE = 111_320
TEAM_SIZE = 5
TEAM_RING_M, HOME_SPREAD_M = 9_000, 3_500
VIAL_10 = {"name": "Ketamine HCl 10 mg/mL, 20 mL vial", "active_ingredient": "ketamine",
           "dea_schedule": "III", "form": "vial", "ug_per_unit": 10_000,
           "units_per_container": Decimal(20), "allowed_routes": ["IV", "IM", "SC"],
           "home_administration_allowed": True}
VIAL_50 = {"name": "Ketamine HCl 50 mg/mL, 10 mL vial", "active_ingredient": "ketamine",
           "dea_schedule": "III", "form": "vial", "ug_per_unit": 50_000,
           "units_per_container": Decimal(10), "allowed_routes": ["IV", "IM"],
           "home_administration_allowed": True}


def new_id(ids: random.Random) -> uuid.UUID:
    """Return a client-made UUID drawn from `ids`."""
    return uuid.UUID(int=ids.getrandbits(128), version=4)


class Phone:
    """A phone's Ed25519 key pair, drawn from the simulation's randomness."""

    def __init__(self, rng: random.Random) -> None:
        self.key = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))

    def public_key_b64(self) -> str:
        """Return the raw public key in base64, as registration takes it."""
        raw = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return base64.b64encode(raw).decode()

    def sign(self, payload: object) -> str:
        """Return the base64 signature over the canonical bytes of `payload`."""
        return base64.b64encode(self.key.sign(canonical_bytes(payload))).decode()


@dataclass
class Person:
    """A user of the organisation, acting through the services; a phone if she has one."""

    user_id: uuid.UUID
    caller: Caller
    phone: Phone | None = None

    @property
    def device_id(self) -> uuid.UUID | None:
        """Return the registered phone's id."""
        return self.caller.device_id


@dataclass
class Vial:
    """One vial in a bag: which product and lot, and how much it holds."""

    product: str
    lot: str
    expiry: date
    content_ug: int


@dataclass
class Nurse(Person):
    """A visiting nurse: her team and the vials physically in her bag."""

    index: int = 0
    team: int = 0
    bag: list[Vial] = field(default_factory=list)
    # The vials of the bag still meant for today's visits; the rest are spares.
    due: int = 0


@dataclass
class Patient:
    """A patient: home, weight, physiology, nurse, prescriber, and how her course goes.

    `weight_g` is what she truly weighs; `charted_g` the last weight recorded, which the plan's
    µg/kg dose is computed from (they differ only when someone records a false weight).
    """

    index: int
    id: uuid.UUID
    nurse: int
    home: tuple[Decimal, Decimal]
    weight_g: int
    baseline: vitals.Baseline
    phq9: int
    responder: bool
    prescriber: int = 0
    plan_id: uuid.UUID | None = None
    product: str = "k10"
    ug_per_kg: int = 500
    charted_g: int = 0
    weighed_at: datetime | None = None
    sessions: int = 0


@dataclass(frozen=True)
class Product:
    """A product in the catalogue and the micrograms in one of its containers."""

    id: uuid.UUID
    container_ug: int


@dataclass
class World:
    """The organisation being simulated, its people, and the clock that drives it."""

    rng: random.Random
    ids: random.Random
    # When witnesses' phones confirm wastes: a stream of its own, so timing confirmations
    # leaves every other draw of the seed as it was.
    confirming: random.Random
    rt: Runtime
    clock: FixedClock
    organisation_id: uuid.UUID
    zone: ZoneInfo
    start: date
    days: int
    truth: Truth
    admin: Person
    prescribers: list[Person]
    pharmacists: list[Person]
    nurses: list[Nurse] = field(default_factory=list)
    patients: list[Patient] = field(default_factory=list)
    products: dict[str, Product] = field(default_factory=dict)

    @property
    def prescriber(self) -> Person:
        """Return the first prescriber, who books the office's extra visits."""
        return self.prescribers[0]

    def new_id(self) -> uuid.UUID:
        """Return a client-made UUID for a new record."""
        return new_id(self.ids)

    def at(self, day: int, hour: int, minute: int = 0) -> datetime:
        """Return the aware local time `hour:minute` of simulated day `day`."""
        return datetime.combine(self.start + timedelta(days=day), time(hour, minute),
                                tzinfo=self.zone)

    def day_of(self, at: datetime) -> int:
        """Return the simulated day that `at` falls on, in the organisation's time."""
        return (at.astimezone(self.zone).date() - self.start).days


def _caller(organisation_id: uuid.UUID, user_id: uuid.UUID, role: Role,
            device_id: uuid.UUID | None = None) -> Caller:
    return Caller(user_id=user_id, organisation_id=organisation_id, role=role, family_id=None,
                  device_id=device_id, address=None, factor=FactorUse.standing("simulated"))


def _person(session: Session, rt: Runtime, ids: random.Random, organisation_id: uuid.UUID,
            role: Role, username: str, *, phone: bool) -> Person:
    password = "".join(ids.choices("abcdefghijkmnpqrstuvwxyz23456789", k=24))
    user = accounts.create_user(session, rt, None, organisation_id=organisation_id,
                                username=username, display_name=username.replace("-", " ")
                                .title(), role=role, password=password)
    person = Person(user.id, _caller(organisation_id, user.id, role))
    if phone:
        person.phone = Phone(ids)
        device = devices.register(session, rt, person.caller,
                                  public_key=person.phone.public_key_b64(),
                                  label=f"{username} phone", device_id=new_id(ids))
        person.caller = replace(person.caller, device_id=device.id)
    return person


def _account_runtime(rt: Runtime) -> Runtime:
    # Nobody ever logs in as a simulated user: each password is 24 random characters that are
    # thrown away, so argon2's memory-hard cost (a third of a second each) buys nothing here.
    # Should someone ever log in, the hash is upgraded to the configured cost then.
    return replace(rt, passwords=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1,
                                                type=Type.ID))


def build(session: Session, rt: Runtime, rng: random.Random, truth: Truth,
          start: date) -> World:
    """Create the organisation, its staff with phones, its nurses and its products."""
    clock = FixedClock(datetime.combine(start, time(6), tzinfo=ZoneInfo(TIMEZONE)))
    rt = replace(rt, clock=clock)
    org = accounts.create_organisation(session, rt, slug=truth.organisation,
                                       name=f"Simulated Home Infusion ({truth.organisation})",
                                       dea_registration=ORG_DEA, timezone=TIMEZONE)
    staff_rt = _account_runtime(rt)
    # Ids and keys are drawn apart from the world's events and differ by organisation, so two
    # simulations of one seed can share a database; what happens depends on the seed alone.
    ids = random.Random(f"{truth.organisation}/{truth.seed}")  # noqa: S311

    def person(role: Role, username: str, phone: bool = False) -> Person:
        return _person(session, staff_rt, ids, org.id, role, username, phone=phone)

    # A pharmacist and a prescriber for about ten nurses, at least three of each: enough
    # colleagues for a pharmacist's or a prescriber's work to be compared with her peers'.
    desk = max(3, round(truth.nurses / 10))
    confirming = random.Random(f"confirming/{truth.seed}")  # noqa: S311
    world = World(rng=rng, ids=ids, confirming=confirming, rt=rt, clock=clock,
                  organisation_id=org.id,
                  zone=ZoneInfo(TIMEZONE), start=start, days=truth.days, truth=truth,
                  admin=person(Role.ADMIN, "sim-admin"),
                  prescribers=[person(Role.PRESCRIBER, f"sim-prescriber-{n}")
                               for n in range(1, desk + 1)],
                  pharmacists=[person(Role.PHARMACIST, f"sim-pharmacist-{n}", True)
                               for n in range(1, desk + 1)])
    person(Role.COMPLIANCE, "sim-compliance")
    teams = max(1, round(truth.nurses / TEAM_SIZE))
    for index in range(truth.nurses):
        staff = person(Role.NURSE, f"sim-nurse-{index + 1:03d}", True)
        world.nurses.append(Nurse(staff.user_id, staff.caller, staff.phone, index=index,
                                  team=index % teams))
    world.products = {key: _product(session, rt, world, spec)
                      for key, spec in (("k10", VIAL_10), ("k50", VIAL_50))}
    return world


def _product(session: Session, rt: Runtime, world: World, spec: dict) -> Product:
    product = products.add(session, rt, world.pharmacists[0].caller, **spec,
                           product_id=world.new_id())
    return Product(product.id, spec["ug_per_unit"] * int(spec["units_per_container"]))


def _offset(point: tuple[float, float], north_m: float, east_m: float) -> tuple[float, float]:
    latitude, longitude = point
    return (latitude + north_m / METRES_PER_DEGREE,
            longitude + east_m / (METRES_PER_DEGREE * math.cos(math.radians(latitude))))


def team_centre(world: World, team: int) -> tuple[float, float]:
    """Return the middle of a team's area, on a ring around the city centre."""
    teams = max(nurse.team for nurse in world.nurses) + 1
    if teams == 1:
        return CENTRE
    angle = 2 * math.pi * team / teams
    return _offset(CENTRE, TEAM_RING_M * math.cos(angle), TEAM_RING_M * math.sin(angle))


def degrees(point: tuple[float, float]) -> tuple[Decimal, Decimal]:
    """Return a position as the six-place decimals a home or a check-in stores."""
    return tuple(Decimal(f"{value:.6f}") for value in point)  # type: ignore[return-value]


def near(point: tuple[Decimal, Decimal], rng: random.Random, sigma_m: float,
         at_least_m: float = 0) -> tuple[Decimal, Decimal]:
    """Return a position about `sigma_m` (and at least `at_least_m`) metres from `point`."""
    distance = at_least_m + abs(rng.gauss(0, sigma_m))
    bearing = rng.uniform(0, 2 * math.pi)
    return degrees(_offset((float(point[0]), float(point[1])),
                           distance * math.cos(bearing), distance * math.sin(bearing)))


def register_patient(session: Session, world: World, index: int, nurse: Nurse,
                     prescriber: int = 0) -> Patient:
    """Register a fictitious patient in the nurse's team area, with a weight."""
    rng = world.rng
    home = near(degrees(team_centre(world, nurse.team)), rng, HOME_SPREAD_M / 2)
    backup = [other.user_id for other in world.nurses
              if other.team == nurse.team and other is not nurse][:1]
    view = patients.register(
        session, world.rt, world.admin.caller, mrn=f"SIM-{index + 1:05d}",
        name=f"Simulated Patient {index + 1:05d}",
        date_of_birth=date(rng.randint(1950, 2002), rng.randint(1, 12), rng.randint(1, 28)),
        nurse_ids=[nurse.user_id, *backup], patient_id=world.new_id(),
        address=f"Simulated address {index + 1:05d}", home_latitude=home[0],
        home_longitude=home[1])
    patient = Patient(index=index, id=view.id, nurse=nurse.index, prescriber=prescriber,
                      home=home,
                      weight_g=int(min(max(rng.gauss(82_000, 15_000), 48_000), 140_000))
                      // 100 * 100,
                      baseline=vitals.baseline(rng),
                      phq9=rng.randint(15, 24), responder=rng.random() < 0.65)
    weigh(session, world, patient, world.admin.caller)
    return patient


def weigh(session: Session, world: World, patient: Patient, caller: Caller,
          measured_at: datetime | None = None, charted_g: int | None = None) -> None:
    """Weigh the patient (weights drift by a few hundred grams between weighings).

    `charted_g` is recorded instead of what the scale showed: a false weight.
    """
    patient.weight_g += world.rng.choice((-300, -200, 0, 0, 100, 200, 300))
    patient.charted_g = charted_g or patient.weight_g
    measured_at = measured_at or world.clock.now()
    patients.record_weight(session, world.rt, caller, patient.id,
                           weight_kg=Decimal(patient.charted_g).scaleb(-3),
                           measured_at=measured_at)
    patient.weighed_at = measured_at

"""The registrant as every DEA record names it: name, address and registration."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from backend.accounts.models import Organisation


@dataclass(frozen=True)
class Registrant:
    """The organisation whose DEA registration covers the stock, as its records print it."""

    name: str
    dea_registration: str
    dea_expires_on: date | None
    address_line: str
    city: str
    state: str
    postal_code: str
    phone: str

    @property
    def address(self) -> str:
        """Return the address on one line, blank parts left out."""
        place = " ".join(filter(None, (self.state, self.postal_code)))
        return ", ".join(filter(None, (self.address_line, self.city, place)))


def registrant(organisation: Organisation) -> Registrant:
    """Return the registrant details of `organisation`; missing parts are blank."""
    return Registrant(
        name=organisation.name, dea_registration=organisation.dea_registration,
        dea_expires_on=organisation.dea_expires_on, address_line=organisation.address_line or "",
        city=organisation.city or "", state=organisation.state or "",
        postal_code=organisation.postal_code or "", phone=organisation.phone or "")

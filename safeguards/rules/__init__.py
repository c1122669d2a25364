"""Every safeguard rule, by family, and `ALL`: the one registry the engine runs over `Facts`."""

from safeguards.registry import Registry
from safeguards.rules.custody import CUSTODY
from safeguards.rules.devices import DEVICES
from safeguards.rules.dosing import DOSING
from safeguards.rules.evv import EVV
from safeguards.rules.frequency import FREQUENCY
from safeguards.rules.hours import HOURS
from safeguards.rules.peers import PEERS
from safeguards.rules.pharmacy import PHARMACY
from safeguards.rules.plausibility import PLAUSIBILITY
from safeguards.rules.prescribers import PRESCRIBERS
from safeguards.rules.sessions import SESSIONS
from safeguards.rules.visits import VISITS
from safeguards.rules.waste import WASTE

FAMILIES = (SESSIONS, DOSING, FREQUENCY, VISITS, CUSTODY, WASTE, PEERS, EVV, DEVICES,
            PRESCRIBERS, PHARMACY, HOURS, PLAUSIBILITY)
ALL = Registry(rule for family in FAMILIES for rule in family)

__all__ = ["ALL", "CUSTODY", "DEVICES", "DOSING", "EVV", "FREQUENCY", "HOURS", "PEERS",
           "PHARMACY", "PLAUSIBILITY", "PRESCRIBERS", "SESSIONS", "VISITS", "WASTE"]

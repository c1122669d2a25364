"""Which phone already holds a synced record: the one that pushed it, until it starts afresh.

WatermelonDB marks what it pushed as synced and keeps it. Sending such a record back as
`created` makes a stock client log "already exists locally"; sending an `updated` record a
phone lacks makes it log "doesn't exist locally". So a push notes each record it stored for
its phone (`pushed`), and that phone's pulls leave the record out while the server holds it
as the phone does, and send it as `updated` once the server's version differs. A pull
from zero means the phone holds nothing it pushed before (a reinstall or a reset), so it is
remembered per phone (`SyncDevice`), and those records are sent again as `created`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend import synced, untrusted
from backend.auth.caller import Caller
from backend.db import upsert
from backend.runtime import Runtime
from backend.sync.models import SyncDevice, SyncRow
from backend.sync.tables import Column, SyncTable


def pushed(session: Session, rt: Runtime, caller: Caller, table: SyncTable,
           raw: dict[str, Any]) -> None:
    """Note that the caller's phone holds this new record, and whether as the server stores it."""
    if caller.device_id is None:
        return
    record_id = uuid.UUID(raw["id"])
    [stored] = table.read(session, rt, [record_id])
    # Columns the server sets (a custody entry's holders) reach the phone as an update.
    amended = any(_compared(column, raw.get(column.name)) != _compared(column, stored[column.name])
                  for column in table.columns)
    synced.pushed(session, table.name, record_id, caller.device_id, amended=amended)


def _compared(column: Column, value: Any) -> Any:
    """Return a column's value as compared: JSON parsed, times as instants, so notation agrees."""
    if not (isinstance(value, str) and value):
        return value
    try:
        if column.json:
            return untrusted.loads(value)
        moment = datetime.fromisoformat(value)
    except (ValueError, untrusted.RefusedInput):
        return value
    # A phone writes `...00.000Z` where the server writes `...00+00:00`; a date stays a date.
    return moment if moment.tzinfo else value


@dataclass(frozen=True)
class Phone:
    """The pulling phone, and the change number before which it holds nothing it pushed."""

    device_id: uuid.UUID
    first_pull_seq: int

    def holds(self, row: SyncRow) -> bool:
        """Return whether this phone pushed the row since it last started from zero."""
        return row.origin_device_id == self.device_id and row.created_seq > self.first_pull_seq


def pulling(session: Session, caller: Caller, since: int, top: int) -> Phone | None:
    """Return the caller's phone as of this pull; a pull from zero starts it afresh at `top`."""
    if caller.device_id is None:
        return None
    if since == 0:
        insert = upsert(session, SyncDevice).values(device_id=caller.device_id,
                                                    first_pull_seq=top)
        session.execute(insert.on_conflict_do_update(
            index_elements=["device_id"], set_={"first_pull_seq": top}))
        return Phone(caller.device_id, top)
    first = session.scalar(select(SyncDevice.first_pull_seq).where(
        SyncDevice.device_id == caller.device_id))
    return Phone(caller.device_id, first or 0)

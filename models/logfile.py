"""Read event logs in the public CSV format into :class:`~models.events.Event` objects.

Format (header row, time-ordered): ``ts,user_id,event,item_id[,category[,price]]`` with
``ts`` in epoch seconds and ``event`` one of ``view``, ``click``, ``buy``. Event ids are
derived from the file's name and the row number, so replaying the same file twice gives
the same ids (and so the same decision ids).

Rows that cannot be parsed are returned as :class:`BadRow` (never raised): real logs
contain dirty rows and a replay must count them, not die on them.

>>> import io
>>> rows = io.StringIO("ts,user_id,event,item_id,category,price\\n"
...                    "1569888000,u1,view,i1,phones,99.5\\n"
...                    "oops,u1,view,i1,,\\n")
>>> [type(r).__name__ for r in read_events(rows, source="demo")]
['Event', 'BadRow']
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from models.events import Event, EventType

_TYPES = {t.value: t for t in EventType}


@dataclass(frozen=True, slots=True)
class BadRow:
    line: int
    detail: str


def read_events(stream: Iterable[str] | TextIO, *, source: str) -> Iterator[Event | BadRow]:
    """Yield one Event (or BadRow) per data row, in file order."""
    reader = csv.DictReader(stream)
    for line, row in enumerate(reader, start=2):
        yield _parse(row, line, source)


def open_events(path: str | Path) -> Iterator[Event | BadRow]:
    """Read a log file; event ids are ``<file stem>:<line>``."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as stream:
        yield from read_events(stream, source=path.stem)


def _parse(row: dict[str, str], line: int, source: str) -> Event | BadRow:
    try:
        ts = float(row["ts"])
        event_type = _TYPES[row["event"]]
        user_id, item_id = row["user_id"], row["item_id"]
    except (KeyError, TypeError, ValueError) as exc:
        return BadRow(line, f"unparsable row: {exc!r}")
    if not user_id or not item_id or not math.isfinite(ts):
        return BadRow(line, "empty user_id/item_id or non-finite ts")
    price = _price(row.get("price"))
    return Event(
        event_id=f"{source}:{line}",
        type=event_type,
        user_id=user_id,
        item_id=item_id,
        ts=ts,
        category=row.get("category") or None,
        price=price,
        quantity=1 if event_type is EventType.BUY else None,
    )


def _price(text: str | None) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None

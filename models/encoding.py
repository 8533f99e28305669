"""Right-sized orjson encoding for values that stay in memory.

``orjson.dumps`` returns a ``bytes`` object that keeps the over-allocated buffer it was
written into: about 4 KiB resident for a 100-byte payload, 8 KiB for a 1.2 KB one
(measured with VmRSS over 10,000 objects). Values a worker keeps for a long time — table
values such as profiles, co-occurrence rows and pending triggers — are copied once into
an exactly-sized object instead; a copy costs well under a microsecond.

>>> compact({"a": [1, 2]})
b'{"a":[1,2]}'
"""

from __future__ import annotations

from typing import Any

import orjson


def compact(value: Any) -> bytes:
    """``orjson.dumps(value)`` copied into an exactly-sized ``bytes`` object."""
    return bytes(memoryview(orjson.dumps(value)))

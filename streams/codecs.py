"""Wire formats the adapters write (orjson), beside the event decoder in ``models``."""

from __future__ import annotations

import base64

import orjson

from models.events import Rejection

DLQ_SCHEMA_VERSION = 1


def dlq_record(
    rejection: Rejection,
    *,
    value: bytes | None,
    key: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    rejected_at: float,
) -> bytes:
    """A dead-letter record: the original bytes (base64), where they came from and why.

    The original key and value are kept byte for byte so an operator can fix the
    producer and replay the record unchanged (see ``schemas/dlq.v1.json``).
    """
    return orjson.dumps(
        {
            "schema": DLQ_SCHEMA_VERSION,
            "reason": rejection.reason.value,
            "detail": rejection.detail,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "key_b64": None if key is None else base64.b64encode(key).decode(),
            "value_b64": None if value is None else base64.b64encode(value).decode(),
            "rejected_at": rejected_at,
        }
    )

"""The local services' helpers that need no running broker."""

from __future__ import annotations

import uuid
from unittest import mock

from load.services import kraft_cluster_id


def test_a_cluster_id_never_starts_with_a_dash_so_the_storage_tool_reads_it_as_a_value() -> None:
    # Bytes whose url-safe base64 starts with "-" (0xf8 -> "-"), then a plain one.
    dashed = uuid.UUID(bytes=b"\xf8" + b"\x00" * 15)
    plain = uuid.UUID(bytes=b"\x00" * 16)
    with mock.patch("load.services.uuid.uuid4", side_effect=[dashed, plain]):
        assert kraft_cluster_id() == "AAAAAAAAAAAAAAAAAAAAAA"


def test_a_cluster_id_is_a_22_character_base64_uuid() -> None:
    for _ in range(500):
        cid = kraft_cluster_id()
        assert len(cid) == 22
        assert not cid.startswith("-")

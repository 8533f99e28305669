"""The worker's log: no client debug output, no repeated subscription tables."""

from __future__ import annotations

import logging

import pytest

from streams.worker import quiet_client_loggers


def test_client_loggers_never_log_below_info_and_subscription_updates_are_quiet(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logging.getLogger("aiokafka").setLevel(logging.DEBUG)
    quiet_client_loggers()
    with caplog.at_level(logging.DEBUG, logger="nudgestream"):
        logging.getLogger("aiokafka.conn").debug("SASL exchange with a password")
        logging.getLogger("aiokafka.consumer.subscription_state").info(
            "Updating subscribed topics to: %s", frozenset({"events.view"})
        )
        logging.getLogger("aiokafka.consumer.consumer").info("Subscribed to topic(s): %s", {"x"})
    assert [r.getMessage() for r in caplog.records] == ["Subscribed to topic(s): {'x'}"]

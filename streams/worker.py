"""Running a worker process: logging, settings echo and Faust's worker loop."""

from __future__ import annotations

import logging

import faust

from streams.app import Worker
from streams.faust_internals import check_faust_version
from streams.settings import Settings

log = logging.getLogger("nudgestream")


def run_worker(settings: Settings) -> int:
    check_faust_version()
    worker = Worker(settings)
    log.info("nudgestream worker settings: %s", settings.redacted())
    faust_worker = faust.Worker(
        worker.app,
        loglevel=settings.log_level.upper(),
        # Faust's spinner and colour codes garble logs collected by containers.
        quiet=True,
    )
    quiet_client_loggers()
    faust_worker.execute_from_commandline()  # returns only through SystemExit
    return 0


#: Loggers that repeat themselves at INFO in normal operation: aiokafka logs the whole
#: subscription (drawn as a table by Faust) every time Faust updates it, many times a start.
_REPETITIVE_LOGGERS = ("aiokafka.consumer.subscription_state",)


def quiet_client_loggers() -> None:
    """Client libraries log message contents and SASL exchanges at DEBUG: never below INFO,
    whatever the worker's level, so no secret or raw user id reaches the logs."""
    for name in ("aiokafka", "faust", "mode", "kafka"):
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger(name).level))
    for name in _REPETITIVE_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)

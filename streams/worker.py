"""Running a worker process: logging, settings echo and Faust's worker loop."""

from __future__ import annotations

import logging

import faust

from streams.app import Worker
from streams.settings import Settings

log = logging.getLogger("nudgestream")


def run_worker(settings: Settings) -> int:
    worker = Worker(settings)
    log.info("nudgestream worker settings: %s", settings.redacted())
    faust_worker = faust.Worker(
        worker.app,
        loglevel=settings.log_level.upper(),
        # Faust's spinner and colour codes garble logs collected by containers.
        quiet=True,
    )
    # Client libraries log message contents and SASL exchanges at DEBUG: never below INFO,
    # whatever the worker's level, so no secret or raw user id reaches the logs.
    for name in ("aiokafka", "faust", "mode", "kafka"):
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger(name).level))
    faust_worker.execute_from_commandline()  # returns only through SystemExit
    return 0

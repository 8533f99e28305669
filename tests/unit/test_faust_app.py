"""The Faust app's producer is sized from the settings, not left at Faust's defaults."""

from __future__ import annotations

from streams.clients import faust_app
from streams.settings import load


async def test_the_producer_buffer_and_batches_take_their_limits_from_the_settings() -> None:
    settings = load(
        {"NUDGESTREAM_PRODUCER_BUFFER_MAX_MESSAGES": "1234", "NUDGESTREAM_PRODUCER_MAX_BATCH_BYTES": "65536"}
    )
    app = faust_app(settings)
    assert app.conf.producer_max_batch_size == 65536
    # Faust's default is 100: past it every stream waits for the buffer to drain.
    assert app.producer.buffer.max_messages == 100
    for task in app._app_tasks:  # what the app runs once it has started
        await task()
    assert app.producer.buffer.max_messages == 1234

"""``nudgestream bench``: throughput, latency and memory of one worker, in one run.

The run uses the configured, real Kafka broker and Redis server, in a namespace of its
own (topic prefix, application id, consumer group, Redis key prefix ``bench-<hex>``),
all of which it deletes at the end:

1. **Backlog.** ``events`` synthetic events (:mod:`load.generator`: ``users`` users, no
   malformed messages, event times ending about a minute before now) are produced to
   the three event topics.
2. **Raw passthrough** (``raw_passthrough_eps``). One plain aiokafka consumer reads those
   messages (same topics, partitions and bytes) and one plain aiokafka producer writes a
   one-byte message per event to a sink topic with ``acks=all``, as the worker does. No
   decoding, no state: the ceiling of one Python process on this broker and machine,
   timed from the first message consumed to the last one acknowledged.
   **Faust batch peer** (``faust_passthrough_eps``, :mod:`load.bench.faust_peer`): a
   minimal faust-streaming app in a process of its own, over ``take_events(500, 5 ms)``,
   that decodes every event with orjson and sends one message per event without
   awaiting each send: what a good Faust app moves per core. ``ratio_vs_faust`` is
   ``pipeline_eps`` over it.
3. **Pipeline** (``pipeline_eps``). One worker process (``python -m streams.cli worker``)
   is started on the backlog. Its ``/metrics`` are polled (events handled = consumed +
   rejected + duplicates) from the first poll that sees progress, so start-up is
   excluded. The worker feeds itself (co-occurrence increments, segment samples, delayed
   triggers), so the clock stops when its consumer group has no lag left on any topic;
   ``ingest_eps`` is the rate until ``/metrics`` counted every event.
4. **Memory** (``rss_bytes_per_user``, also ``bytes_per_user``). VmRSS of the worker once it has drained the backlog,
   minus VmRSS when it turned ready, divided by the users that occur in the backlog: an
   upper bound of the per-user state, as item rows, the segment model, buffers and
   allocator slack are in the difference too. ``tables`` gives the state itself: keys and
   encoded bytes of every table, read back from the changelogs; ``encoded_bytes_per_user``
   (also ``table_bytes_per_user``) is their sum per active user. Then the backlog is
   produced again under new user and event ids and drained: ``rss_marginal_bytes_per_user``
   is the RSS growth over it per added user, the per-user cost once the buffers and
   caches that do not scale with users have grown (the figure the 4 KiB goal judges).
5. **Latency** (``latency_ms``). Fresh events, stamped with the wall clock as they are
   sent, are offered at ``load_share`` (50 %) of ``pipeline_eps`` for ``latency_s``
   seconds. Every decision made for them (pushed, or audited as suppressed, deferred or
   holdout) is read back and timed as its arrival minus its ``event_ts``. The worker's own
   ``nudgestream_event_lag_seconds`` histogram (event time to end of processing) over the
   same span gives ``event_lag_ms``.
6. **Lag** (``lag_end``). End offsets minus the worker group's committed offsets, over
   every topic the group reads, once the worker has handled all it was sent.

Diagnostics beside the figures: the worker's CPU use in both phases (``worker_cpu``,
1.0 = one core) and the messages it wrote to Kafka per backlog event, by topic
(``messages_per_event``).

>>> percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.5)
3.0
>>> percentile([], 0.99) is None
True
"""


from load.bench.cli import add_bench_arguments, run_bench_command
from load.bench.latency import percentile
from load.bench.run import run_bench

__all__ = ["add_bench_arguments", "percentile", "run_bench", "run_bench_command"]

"""The segment trainer's own process: CluStream learns off the worker's event loop.

CluStream's ``learn_one`` costs 0.05-5 ms and holds the GIL, so in a thread of the worker
it still stalls the event loop (and every agent on it) for that long, many times a
second. The trainer therefore lives in a child process (``python -m
streams.trainer_process``) that holds the :class:`~models.segments.SegmentTrainer`; the
worker only writes requests to its stdin and reads replies from its stdout, both
asynchronously.

Protocol: frames of a 4-byte big-endian length and a pickled tuple, one request then one
reply at a time. Pickle is fine here: both ends are this module, in processes of the
same deployment.

* ``("start", checkpoint | None, snapshot | None)`` → ``("started", version, detail)``:
  restore the checkpoint, else resume from the snapshot (its bytes), else start fresh.
* ``("learn", [training record, ...])`` → ``("learned", count)``.
* ``("snapshot", now)`` → ``("snapshot", snapshot | None, checkpoint | None, micro_clusters)``:
  a snapshot's bytes only when its version is new, with the checkpoint taken right after it.
* any failure → ``("error", message)``.

The child ignores SIGINT (the worker decides when it stops) and exits when its stdin
closes, so it never outlives a worker, even one killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import IO, Any

import orjson

from models.segments import CheckpointError, SegmentSnapshot, SegmentTrainer

log = logging.getLogger(__name__)

#: A request the child has not answered in this long means it hangs: it is killed.
REQUEST_TIMEOUT_S = 120.0
#: How long a stopped child gets to exit on SIGTERM before it is killed.
STOP_TIMEOUT_S = 5.0

Message = tuple[Any, ...]


class TrainerProcessError(RuntimeError):
    """The trainer process exited, hung or broke the protocol; it is gone now."""


def encode_frame(message: Message) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return len(payload).to_bytes(4, "big") + payload


class TrainerProcess:
    """One child process and its pipes, seen from the worker's event loop."""

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        # The child must import this worker's code: give it the same module path.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "streams.trainer_process",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
        )

    async def call(self, request: Message, timeout_s: float = REQUEST_TIMEOUT_S) -> Message:
        """Send one request and wait for its reply; raises :class:`TrainerProcessError`."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            raise TrainerProcessError(f"not running (exit code {proc.returncode if proc else None})")
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(encode_frame(request))
            reply = await asyncio.wait_for(self._exchange(proc), timeout_s)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            await self.close()
            raise TrainerProcessError(f"{type(exc).__name__} (exit code {proc.returncode})") from exc
        except BaseException:
            # Cancelled mid-request: its reply would be read as the next one's. A new
            # process restored from the checkpoint is the only safe continuation.
            proc.kill()
            raise
        if reply[0] == "error":
            raise RuntimeError(f"segment trainer process: {reply[1]}")
        return reply

    async def _exchange(self, proc: asyncio.subprocess.Process) -> Message:
        assert proc.stdin is not None and proc.stdout is not None
        await proc.stdin.drain()
        size = int.from_bytes(await proc.stdout.readexactly(4), "big")
        reply: Message = pickle.loads(await proc.stdout.readexactly(size))
        return reply

    async def close(self) -> None:
        """Stop the child (SIGTERM, then SIGKILL) and reap it: no zombie is left."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()


class TrainerState:
    """The child's side: a trainer and the last version it handed out."""

    def __init__(self) -> None:
        self.trainer: SegmentTrainer | None = None
        self.published = 0

    def handle(self, request: Message) -> Message:
        kind = request[0]
        if kind == "start":
            return self._start(request[1], request[2])
        trainer = self.trainer
        if trainer is None:
            raise RuntimeError(f"{kind!r} before 'start'")
        if kind == "learn":
            for vector, categories in map(_sample, request[1]):
                trainer.learn_one(vector, categories)
            return ("learned", len(request[1]))
        if kind == "snapshot":
            snap = trainer.snapshot(request[1])
            if snap is None or snap.version == self.published:
                return ("snapshot", None, None, trainer.micro_clusters)
            self.published = snap.version
            return ("snapshot", snap.to_bytes(), trainer.checkpoint(), trainer.micro_clusters)
        raise RuntimeError(f"unknown request {kind!r}")

    def _start(self, checkpoint: bytes | None, latest: bytes | None) -> Message:
        detail = "started fresh" if latest is None else "resumed from the latest snapshot"
        trainer = None
        if checkpoint:
            try:
                trainer = SegmentTrainer.restore(checkpoint)
                detail = "restored from the checkpoint"
            except CheckpointError as exc:
                detail = f"checkpoint not usable ({exc}); {detail}"
        if trainer is None:
            trainer = SegmentTrainer(resume_from=SegmentSnapshot.from_bytes(latest) if latest else None)
        self.trainer = trainer
        self.published = trainer.version
        return ("started", trainer.version, detail)


def _sample(record: bytes) -> tuple[Sequence[float], Mapping[str, float]]:
    data = orjson.loads(record)
    return data["v"], data.get("c") or {}


def _read_frame(stream: IO[bytes]) -> Message | None:
    head = stream.read(4)
    if len(head) < 4:
        return None  # the worker closed the pipe (it stopped, or died)
    size = int.from_bytes(head, "big")
    message: Message = pickle.loads(stream.read(size))
    return message


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s trainer: %(message)s")
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to the log, never into the replies
    state = TrainerState()
    while (request := _read_frame(requests)) is not None:
        try:
            reply = state.handle(request)
        except Exception as exc:  # reported to the worker, which logs it
            log.exception("request %r failed", request[0])
            reply = ("error", f"{type(exc).__name__}: {exc}")
        replies.write(encode_frame(reply))
        replies.flush()


if __name__ == "__main__":
    main()

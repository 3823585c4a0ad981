"""Sweep the filesystem broker of messages nobody consumes: events of a stopped Flower, late control replies.

kombu's filesystem transport writes one file per message and per bound queue, and never forgets a binding:
each Flower run binds its own ``celeryev.<uuid>`` queue to the events exchange, and once Flower stops every
task and heartbeat event is still written there, for no reader. AMQP's queue expiry and message TTL
(``event_queue_expires``, ``event_queue_ttl``) have no equivalent in this transport. Task queues (the
registry's) are never touched: their messages wait for a worker however long it takes.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from {{ cookiecutter.project_slug }}.core.celery_internals import filesystem_broker_lock

#: The end of every message file's name; the queue is between the first dot and it.
MESSAGE_SUFFIX = ".msg"


@dataclass
class Swept:
    """What one sweep removed: message files, and the queues unbound from their exchanges."""

    files: int = 0
    unbound: set[str] = field(default_factory=set)


def message_queue(filename: str) -> str | None:
    """Return the queue of the message file ``filename`` (``<ms>_<uuid>.<queue>.msg``), or ``None``."""
    if not filename.endswith(MESSAGE_SUFFIX) or "." not in filename.removesuffix(MESSAGE_SUFFIX):
        return None
    return filename.removesuffix(MESSAGE_SUFFIX).partition(".")[2]


def sweep(messages: Path, control: Path, task_queues: set[str], max_age: float, now: float | None = None) -> Swept:
    """Delete messages of queues outside ``task_queues`` older than ``max_age`` seconds; unbind those queues.

    A queue whose oldest message waited that long has no consumer (Flower reads its events within a
    second): its binding goes too, so nothing is written for it again. A consumer that comes back binds anew.
    """
    if max_age <= 0:
        raise ValueError(f"max_age must be a positive number of seconds, got {max_age}")
    cutoff = (time.time() if now is None else now) - max_age
    swept = Swept()
    stale: set[str] = set()
    for entry in os.scandir(messages):
        queue = message_queue(entry.name)
        if queue is None or queue in task_queues:
            continue
        try:
            if entry.stat().st_mtime >= cutoff:
                continue
            os.unlink(entry.path)
        except FileNotFoundError:  # consumed meanwhile
            continue
        swept.files += 1
        stale.add(queue)
    if stale:
        for table in control.glob("*.exchange"):
            swept.unbound |= unbind(table, stale)
    return swept


def unbind(table: Path, queues: set[str]) -> set[str]:
    """Remove the bindings of ``queues`` from the exchange table file ``table``; return the queues removed."""
    # The transport's own lock: a queue binding at the same time waits for this rewrite.
    with table.open("rb+", buffering=0) as file, filesystem_broker_lock(file):
        bindings = json.loads(file.read() or b"[]")
        kept = [binding for binding in bindings if binding[2] not in queues]
        if len(kept) != len(bindings):
            file.seek(0)
            file.write(json.dumps(kept).encode())
            file.truncate()
    return {binding[2] for binding in bindings} - {binding[2] for binding in kept}

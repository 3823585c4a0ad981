"""One status poller per process: every open event stream is served by the same batched read."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections import Counter
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

from {{ cookiecutter.project_slug }}.idempotency.models import TaskRecord

#: Keys read per query; keeps the IN list well under every database's parameter limit.
BATCH = 500


class StatusHub:
    """Polls the status rows that streams watch, one query per tick for all of them, and wakes the watchers.

    A stream per job polling on its own costs one query per stream per tick: at 1,000 open streams
    that queue of queries, not the database, sets the delay between a status change and its event.
    """

    def __init__(self, fields: tuple[str, ...]) -> None:
        self.fields = fields
        self.rows: dict[str, dict[str, Any] | None] = {}
        self.versions: Counter[str] = Counter()
        self.watchers: Counter[str] = Counter()
        self.events: dict[str, asyncio.Event] = {}
        self.queries = 0
        self._poller: asyncio.Task[None] | None = None

    async def wait(self, key: str, seen: int, timeout: float) -> tuple[int, dict[str, Any] | None]:
        """Return ``(version, row)`` of ``key`` once its version passes ``seen``, or after ``timeout`` seconds."""
        self.watchers[key] += 1
        try:
            if key not in self.rows:
                await self._refresh([key])  # a new watcher sees the current row at once
            self._ensure_polling()
            if self.versions[key] <= seen:
                event = self.events.setdefault(key, asyncio.Event())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout)
            return self.versions[key], self.rows.get(key)
        finally:
            self.watchers[key] -= 1
            if self.watchers[key] <= 0:
                del self.watchers[key]

    def forget(self, key: str) -> None:
        """Drop the cached row of ``key`` once no stream watches it."""
        if key not in self.watchers:
            self.rows.pop(key, None)
            self.versions.pop(key, None)
            self.events.pop(key, None)

    def _ensure_polling(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        # Runs while anyone watches; the next watcher starts it again.
        while self.watchers:
            await asyncio.sleep(settings.JOBS_SSE_POLL_SECONDS)
            keys = list(self.watchers)
            if keys:
                await self._refresh(keys)

    async def _refresh(self, keys: list[str]) -> None:
        rows = await sync_to_async(self._read, thread_sensitive=False)(keys)
        for key in keys:
            row = rows.get(key)
            if key in self.rows and self.rows[key] == row:
                continue
            self.rows[key] = row
            self.versions[key] += 1
            event = self.events.pop(key, None)
            if event is not None:
                event.set()

    def _read(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        # The shared executor's threads get no request signals: drop a broken or expired connection here.
        close_old_connections()
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), BATCH):
            self.queries += 1
            chunk = keys[start : start + BATCH]
            for row in TaskRecord.objects.filter(key__in=chunk).values("key", *self.fields):
                found[row.pop("key")] = row
        return found


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StatusHub] = weakref.WeakKeyDictionary()


def hub(fields: tuple[str, ...]) -> StatusHub:
    """Return the status hub of the running event loop."""
    loop = asyncio.get_running_loop()
    if loop not in _hubs:
        _hubs[loop] = StatusHub(fields)
    return _hubs[loop]

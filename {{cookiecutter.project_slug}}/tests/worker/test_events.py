"""The worker's event loop alone publishes task events and runs the shutdown signals' handlers (issue 16)."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any
from unittest import mock

from kombu.asynchronous import Hub

from {{ cookiecutter.project_slug }}.core.celery_internals import reentrant_hub_lock
from {{ cookiecutter.project_slug }}.worker.app import app as celery_app
from {{ cookiecutter.project_slug }}.worker.deferredsignals import FALLBACK, defer_shutdown_signals

from support.servers import wait_until


def test_no_send_publishes_buffered_task_events_only_the_loops_flush_does():
    scheduled: list[int] = []
    dispatcher: Any = celery_app.events.Dispatcher(
        celery_app.connection_for_write("memory://"),
        hostname="test@host",
        enabled=False,
        buffer_group=["task"],
        on_send_buffered=lambda: scheduled.append(1),
    )
    # As the worker's Events step makes it, with a producer that records instead of publishing.
    dispatcher.producer = mock.Mock()
    dispatcher.enabled = True

    # Many more than Celery's buffer of 24: the send filling it published under the lock, in whatever thread or
    # signal handler sent it. A handler interrupting the main thread in a flush then waited for its own lock.
    with dispatcher.mutex:  # held, as by the main thread in the flush the signal interrupted
        for number in range(100):
            dispatcher.send("task-cancelled", uuid=str(number))
    assert dispatcher.producer.publish.call_count == 0
    assert len(scheduled) == 100  # each send asked the loop for a flush (the hub keeps one)

    dispatcher.flush()  # the loop's flush, on the main thread
    assert dispatcher.producer.publish.call_count == 1
    assert len(dispatcher.producer.publish.call_args.args[0]) == 100


def test_a_signal_handler_can_schedule_on_the_loop_while_its_thread_holds_the_hub_lock():
    hub: Any = Hub()  # kombu-stubs do not declare its private lock and ready set
    reentrant_hub_lock(hub)
    done = threading.Event()

    def handler_on_the_loop_thread() -> None:
        with hub._ready_lock:  # the loop thread taking its ready callbacks, when the signal lands
            hub.call_soon(lambda: None)  # the cold shutdown's handler sending an event
        done.set()

    thread = threading.Thread(target=handler_on_the_loop_thread, daemon=True)
    thread.start()
    assert done.wait(5), "call_soon waited for the lock its own thread holds"
    assert len(hub._ready) == 1


class RecordingHub:
    """A stand-in for the worker's event loop: it keeps what it is asked to run, and runs it when told."""

    def __init__(self) -> None:
        self.ready: list[Any] = []

    def call_soon(self, callback: Any) -> None:
        self.ready.append(callback)


def test_the_event_loop_runs_a_shutdown_signals_handler_not_the_interrupted_code():
    handled: list[str] = []
    previous = signal.signal(signal.SIGUSR2, lambda *_: handled.append("celery's handler"))
    try:
        hub = RecordingHub()
        defer_shutdown_signals(hub, [signal.SIGUSR2])
        os.kill(os.getpid(), signal.SIGUSR2)
        wait_until(lambda: bool(hub.ready), 2, "the loop to be asked")
        assert handled == []  # not where the signal landed
        hub.ready.pop()()  # the loop's next turn
        assert handled == ["celery's handler"]
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_a_shutdown_signal_the_loop_does_not_take_is_handled_where_it_lands_after_the_fallback():
    handled: list[float] = []
    previous = signal.signal(signal.SIGUSR2, lambda *_: handled.append(time.monotonic()))
    try:
        defer_shutdown_signals(RecordingHub(), [signal.SIGUSR2])  # a loop that never turns (starting, stuck)
        sent = time.monotonic()
        os.kill(os.getpid(), signal.SIGUSR2)
        wait_until(lambda: bool(handled), FALLBACK + 5, "the fallback")
        assert handled[0] - sent >= FALLBACK - 0.1
    finally:
        signal.signal(signal.SIGUSR2, previous)

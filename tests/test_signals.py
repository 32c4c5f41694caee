"""Stop signals: a handler sets the stop request even while the main thread is inside its wait."""

from __future__ import annotations

import threading

from ventas.signals import StopRequest


def test_a_stop_received_while_its_own_thread_holds_the_events_lock_does_not_hang() -> None:
    """As a signal handler runs: in the thread that may be inside `requested.wait()`, holding its lock.
    With a plain threading.Event this thread waits for itself forever."""
    stop = StopRequest()

    def handler_inside_wait() -> None:
        with stop.requested._cond, stop.immediate._cond:
            stop.receive()
            stop.receive()

    thread = threading.Thread(target=handler_inside_wait, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "receive() waited for a lock its own thread holds"
    assert stop.requested.is_set() and stop.immediate.is_set()
    assert stop.requested.wait(0) and stop.immediate.wait(0)

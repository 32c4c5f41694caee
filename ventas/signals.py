"""Stop signals, handled alike by the producer, the consumer and the demo.

The first Ctrl-C, SIGTERM (a supervisor) or SIGHUP (the terminal was closed) asks for a graceful
stop: finish or abandon cleanly what is in progress, then exit. A second one asks to stop at once.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections import Counter

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STOP_NOTICE_AFTER_S = 2.0  # a stop that takes longer says what it waits for
THIS_PROCESS = "this process"


class SignalSafeEvent(threading.Event):
    """A threading.Event that a signal handler may set. The handler runs in the main thread, between
    two of its bytecodes, possibly while that thread holds the event's lock inside wait(): a plain
    Event's lock is not reentrant, and set() would wait for it forever (a producer paced by --rate,
    waiting on `requested` between two sends, hung so on its first SIGTERM)."""

    def __init__(self) -> None:
        super().__init__()
        self._cond = threading.Condition(threading.RLock())


class StopRequest:
    """Stop signals received so far, and which kind of stop they ask for."""

    def __init__(self) -> None:
        self.requested = SignalSafeEvent()
        self.immediate = SignalSafeEvent()
        self._received: Counter[str] = Counter()

    def receive(self, receiver: str = THIS_PROCESS) -> None:
        """One stop signal, received by `receiver`. A terminal's Ctrl-C reaches every process of its
        foreground group at once (spark-submit's JVM and its Python driver), so only a second signal
        to the same process means "stop at once"."""
        self._received[receiver] += 1
        if self._received[receiver] > 1:
            self.immediate.set()
        self.requested.set()

    def install(self) -> None:
        """Route this process's stop signals here (again after a library replaced the handlers)."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, lambda *_: self.receive())


def print_status(message: str) -> None:
    """A status line on stderr that never fails: after SIGHUP the terminal may be gone."""
    with contextlib.suppress(OSError):
        print(message, file=sys.stderr, flush=True)

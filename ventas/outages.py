"""Outages waited out: when Kafka or the totals database cannot be reached, the consumer keeps its
process and tries again with a capped backoff, as Flink's restart strategy and Kafka Streams'
task.timeout.ms do, until the server is back, a stop signal, or --give-up-after.

A wait prints one line when it starts and one when it ends, never one per try; /healthz, /metrics and
the page read it from the dashboard's state."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from ventas.config import UserError
from ventas.sale_windows import describe
from ventas.signals import StopRequest, print_status

if TYPE_CHECKING:  # the dashboard's state imports the totals database, which raises Unavailable
    from ventas.dashboard import DashboardState

T = TypeVar("T")

FIRST_RETRY_S = 1.0
MAX_RETRY_INTERVAL_S = 30.0  # between two tries, however long the outage
STOP_CHECK_S = 0.2


@dataclass(frozen=True)
class Dependency:
    name: str  # its label in /metrics
    display: str  # as the console and /healthz name it: "Kafka at HOST:PORT"


class Unavailable(UserError):
    """A dependency cannot be reached now, for this reason: worth trying again later (where nothing
    waits for it, one line as any UserError)."""


class WaitStopped(Exception):
    """A stop signal arrived while waiting for a dependency."""


def clock_time(at: float | None = None) -> str:
    """A moment (Unix seconds; None: now) as the console and /healthz say when a wait began: '12:03:07'."""
    return f"{datetime.now() if at is None else datetime.fromtimestamp(at):%H:%M:%S}"


def waited_for(seconds: float) -> str:
    """A wait's length as the console says it: '45 s', '3 min'."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds // 60:.0f} min"


class Waits:
    """The consumer's waits for its dependencies; `give_up_after_s` None waits for ever."""

    def __init__(self, stop: StopRequest, give_up_after_s: int | None, dashboard: DashboardState | None) -> None:
        self.stop, self.give_up_after_s, self.dashboard = stop, give_up_after_s, dashboard

    def retry(self, dependency: Dependency, attempt: Callable[[], T]) -> T:
        """`attempt()`'s result, tried again while it raises Unavailable (see wait). Raises WaitStopped on
        a stop signal, and UserError once the wait has lasted --give-up-after."""
        try:
            return attempt()
        except Unavailable as error:
            return self.wait(dependency, attempt, str(error))

    def wait(self, dependency: Dependency, attempt: Callable[[], T], reason: str) -> T:
        """`attempt()`'s result once it no longer raises Unavailable, tried after a growing pause;
        `reason`: why the dependency cannot be reached now."""
        started = time.monotonic()
        print_status(f"consumer: waiting for {dependency.display} since {clock_time()}: {reason}")
        if self.dashboard:
            self.dashboard.show_waiting(dependency.name, dependency.display, reason)
        pause = FIRST_RETRY_S
        while True:
            self._pause(pause, dependency, started, reason)
            pause = min(pause * 2, MAX_RETRY_INTERVAL_S)
            if self.dashboard:
                self.dashboard.count_retry(dependency.name)
            try:
                result = attempt()
            except Unavailable as error:
                reason = str(error)
                continue
            print_status(f"consumer: {dependency.display} is back after {waited_for(time.monotonic() - started)}")
            if self.dashboard:
                self.dashboard.show_back(dependency.name)
            return result

    def _pause(self, seconds: float, dependency: Dependency, started: float, reason: str) -> None:
        until = time.monotonic() + seconds
        while (now := time.monotonic()) < until:
            if self.stop.requested.is_set():
                raise WaitStopped(f"stopped while waiting for {dependency.display}")
            if self.give_up_after_s is not None and now - started >= self.give_up_after_s:
                raise UserError(
                    f"gave up waiting for {dependency.display} after {describe(self.give_up_after_s)} "
                    f"(--give-up-after): {reason}"
                )
            self.stop.requested.wait(min(STOP_CHECK_S, until - now))

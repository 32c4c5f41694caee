"""The live dashboard: one page with the running totals, served by the consumer's driver.

The driver is where the totals, the rejected count and Spark's query progress already are, so the
page needs no other server, broker or database, and it runs wherever the consumer runs: local mode,
a standalone cluster (client mode: the driver runs where spark-submit runs) or docker compose. Spark
serves its own UI from the driver for the same reason.

The consumer's sinks and query listener write a `DashboardState`; a stdlib HTTP server in daemon
threads reads it. The page (ventas/static/: HTML, CSS and a small script, no library, nothing from
a CDN) gets the state as JSON through server-sent events, one event after every change. Product
names travel as JSON strings and are shown as text, never as markup; money travels as exact decimal
strings. With windows of sale_date on (ventas/sale_windows.py), the page also charts the sales per
window over the last hour of sale_date, drawn in SVG by its own script. The server answers GET and
HEAD for fixed paths (the page's, and the /metrics and /healthz of ventas/metrics.py) and takes no
input.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ventas.config import env
from ventas.monitoring import Monitoring, Waiting, partitions_behind
from ventas.outages import clock_time
from ventas.sale_windows import CHART_SPAN_S, window_name
from ventas.signals import print_status
from ventas.table import sorted_totals
from ventas.totals_db import StoredTotals, StoredWindow, money_sum

log = logging.getLogger("dashboard")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8050
STATIC = Path(__file__).resolve().parent / "static"
KEEP_ALIVE_S = 15.0  # an idle event stream sends a comment this often, so a closed tab is noticed
RECONNECT_MS = 2000  # how soon a page retries after the consumer stopped or restarted
EVENT_STREAM = "/events"
FILES = {
    "/": ("dashboard.html", "text/html; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
}
# No inline script or style, no other origin: even markup that slipped into the page could run nothing.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "[::1]"}
TOP_PRODUCTS = 5  # products drawn on their own in the chart of windows; the others as one
# More paths the server answers (/metrics, /healthz): each gives a status, a body and its content type.
Route = Callable[[], tuple[HTTPStatus, bytes, str]]


def add_dashboard_arguments(parser: argparse.ArgumentParser) -> None:
    """--dashboard-port and --dashboard-host, shared by the consumer and the demo."""
    parser.add_argument(
        "--dashboard-port",
        type=port_number,
        default=env("DASHBOARD_PORT", str(DEFAULT_PORT)),
        help="port of the live dashboard page; 0 turns it off (env DASHBOARD_PORT; default %(default)s)",
    )
    parser.add_argument(
        "--dashboard-host",
        default=env("DASHBOARD_HOST", DEFAULT_HOST),
        help="address the dashboard listens on; 0.0.0.0 opens it to the network "
        "(env DASHBOARD_HOST; default %(default)s)",
    )


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0 to 65535."""
    if not text.strip().isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"not a port number (0 to 65535): {text!r}")
    return int(text)


def url(host: str, port: int) -> str:
    """The page's address as a browser wants it (IPv6 literals in brackets)."""
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def products_view(totals: Mapping[str, Decimal]) -> list[dict[str, Any]]:
    """Highest total first, as the console table; `share` (of the highest) sizes the bar only."""
    rows = sorted_totals(totals)
    top = rows[0][1] if rows else Decimal(0)
    return [{"name": name, "total": f"{total:f}", "share": float(total / top) if top else 0.0} for name, total in rows]


def windows_view(windows: Sequence[StoredWindow], length_s: int) -> dict[str, Any]:
    """The chart of sales per window of sale_date: each window's orders, late orders and total, and its
    sales of the `TOP_PRODUCTS` products that sold most over all the windows shown, highest first (ties by
    name). A window lists only the top products it sold. `span_s`: how much time the chart spans."""
    over_all = {
        name: money_sum(window.counts.totals.get(name, Decimal(0)) for window in windows)
        for name in {name for window in windows for name in window.counts.totals}
    }
    top = [name for name, _ in sorted_totals(over_all)[:TOP_PRODUCTS]]
    return {
        "length_s": length_s,
        "span_s": CHART_SPAN_S,
        "title": f"Sales per {window_name(length_s)}",
        "top": top,
        "windows": [
            {
                "start": window.start.astimezone(UTC).isoformat(timespec="milliseconds"),
                "orders": window.counts.orders,
                "late": window.counts.late,
                "total": f"{money_sum(window.counts.totals.values()):f}",
                "top": {name: f"{window.counts.totals[name]:f}" for name in top if name in window.counts.totals},
            }
            for window in windows
        ],
    }


def stream_view(progress: Mapping[str, Any]) -> dict[str, Any]:
    """How the stream keeps up, from one progress report of the totals query (`query.lastProgress`'s
    shape): input and processing rates, and how far the Kafka source is behind the latest offsets."""
    sources = progress.get("sources") or [{}]
    metrics = sources[0].get("metrics") or {}

    def behind(key: str) -> float | None:
        value = metrics.get(key)
        return None if value is None else float(value)

    return {
        "rows": progress.get("numInputRows", 0),
        "input_rows_per_s": progress.get("inputRowsPerSecond"),
        "processed_rows_per_s": progress.get("processedRowsPerSecond"),
        "offsets_behind": {
            "avg": behind("avgOffsetsBehindLatest"),
            "max": behind("maxOffsetsBehindLatest"),
            "min": behind("minOffsetsBehindLatest"),
        },
        "at": progress.get("timestamp"),
    }


class DashboardState:
    """What the page shows. The consumer's sinks and query listener write it, the server's threads
    read it: one lock, and a version that grows with every change, which wakes the event streams.

    Orders and rejected records are counted by the totals query itself, with the totals: since the
    checkpoint's first batch, as the console's `Rejected: ... (T since start)` line."""

    def __init__(self, topic: str) -> None:
        self._changed = threading.Condition()
        self._version = 0
        self._closed = False
        self._monitoring = Monitoring(started_at=time.time())
        # "windows" (windows_view) comes with the first show_windows: without it the page draws no chart.
        self._view: dict[str, Any] = {
            "topic": topic,
            "batch": None,
            "batch_time": None,
            "products": [],
            "grand_total": "0.00",
            "orders": 0,
            "late": 0,
            "undated": 0,
            "future": 0,
            "rejected": 0,
            "stream": None,
            "waiting": None,  # what the consumer waits for, in one line, while it waits
        }

    def _update(self, **changes: Any) -> None:
        with self._changed:
            self._view.update(changes)
            self._version += 1
            self._changed.notify_all()

    def show_totals(self, stored: StoredTotals, newest_record_at: datetime | None = None) -> None:
        """The totals as committed after a micro-batch (or stored in the totals database at start), with
        the valid orders and rejected records counted with them: one event for the page.
        `newest_record_at`: the newest Kafka timestamp in that batch."""
        # Milliseconds at most: not every browser's Date reads Python's microseconds.
        when = datetime.fromisoformat(stored.committed_at) if stored.committed_at else datetime.now(UTC)
        with self._changed:
            watched = self._monitoring
            watched.stored, watched.committed_at = stored, when.timestamp()
            if newest_record_at:
                watched.lag_s = max(0.0, (when - newest_record_at).total_seconds())
        self._update(
            batch=stored.batch_id,
            batch_time=when.isoformat(timespec="milliseconds"),
            products=products_view(stored.totals),
            grand_total=f"{money_sum(stored.totals.values()):f}",
            orders=stored.orders,
            late=stored.late,
            undated=stored.undated,
            future=stored.future,
            rejected=stored.rejected_total,
        )

    def show_windows(self, windows: Sequence[StoredWindow], length_s: int) -> None:
        """The windows of `length_s` seconds (more than 0) the chart shows, oldest first: those of the last
        hour up to the newest sale_date (sale_windows.chart_start), after a micro-batch or at start."""
        self._update(windows=windows_view(windows, length_s))

    def show_progress(self, progress: Mapping[str, Any]) -> None:
        """A progress report of the totals query, after a micro-batch."""
        view = stream_view(progress)
        seconds = progress.get("durationMs", {}).get("triggerExecution", 0) / 1000
        with self._changed:
            watched = self._monitoring
            watched.progress_at = time.time()
            watched.behind = partitions_behind(progress) or watched.behind
            watched.input_rows_per_s, watched.processed_rows_per_s = (
                view["input_rows_per_s"],
                view["processed_rows_per_s"],
            )
            watched.add_batch_seconds(seconds)
        self._update(stream=view)

    def show_idle(self) -> None:
        """The totals query found nothing new to read: nothing arrives, nothing is behind."""
        with self._changed:
            stream = dict(self._view["stream"] or {})
            watched = self._monitoring
            watched.progress_at = time.time()
            watched.behind = dict.fromkeys(watched.behind, 0)
            watched.input_rows_per_s = watched.processed_rows_per_s = 0.0
        stream.update(
            rows=0, input_rows_per_s=0.0, processed_rows_per_s=0.0, offsets_behind={"avg": 0, "max": 0, "min": 0}
        )
        self._update(stream={**stream, "at": _now()})

    def show_waiting(self, dependency: str, display: str, reason: str) -> None:
        """The consumer waits for `dependency` (a name of monitoring.DEPENDENCIES), unreachable for `reason`."""
        with self._changed:
            self._monitoring.waiting[dependency] = Waiting(display, reason, time.time())
        self._update(waiting=f"Waiting for {display} since {clock_time()}: {reason}")

    def count_retry(self, dependency: str) -> None:
        with self._changed:
            self._monitoring.retries[dependency] += 1

    def show_back(self, dependency: str) -> None:
        with self._changed:
            self._monitoring.waiting.pop(dependency, None)
        self._update(waiting=None)

    def show_failure(self, reason: str) -> None:
        """The query failed, for this reason (one line)."""
        with self._changed:
            self._monitoring.failure = reason

    def monitoring(self) -> Monitoring:
        """A copy of what /metrics and /healthz read."""
        with self._changed:
            watched = self._monitoring
            return replace(
                watched,
                behind=dict(watched.behind),
                waiting=dict(watched.waiting),
                retries=dict(watched.retries),
                batch_seconds_counts=list(watched.batch_seconds_counts),
            )

    def snapshot(self) -> tuple[int, str]:
        """The current version and the page's data as JSON."""
        with self._changed:
            return self._version, json.dumps(self._view, ensure_ascii=False)

    def wait_for_change(self, seen: int, timeout_s: float) -> bool:
        """Wait until the version differs from `seen`; False once closed or after `timeout_s` unchanged."""
        with self._changed:
            self._changed.wait_for(lambda: self._closed or self._version != seen, timeout_s)
            return not self._closed and self._version != seen

    def close(self) -> None:
        """End every event stream (the consumer is stopping)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


class _Handler(BaseHTTPRequestHandler):
    """GET and HEAD of the fixed paths; any other method gets 501 from the base class."""

    server: _Server
    protocol_version = "HTTP/1.1"

    def version_string(self) -> str:
        return "ventas-dashboard"  # not the Python version

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        if not self._host_allowed():
            self._send(HTTPStatus.MISDIRECTED_REQUEST, b"unknown host\n", "text/plain; charset=utf-8", body)
            return
        path = self.path.split("?", 1)[0]
        page = self.server.page
        if path in self.server.routes:
            self._send(*self.server.routes[path](), body)
        elif page and path == EVENT_STREAM and body:
            self._stream_events()
        elif page and path == "/data.json":
            self._send(HTTPStatus.OK, self.server.state.snapshot()[1].encode(), "application/json", body)
        elif page and path in FILES:
            name, content_type = FILES[path]
            self._send(HTTPStatus.OK, (STATIC / name).read_bytes(), content_type, body)
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8", body)

    def _host_allowed(self) -> bool:
        """A page bound to loopback answers loopback names only: a web page elsewhere cannot read it
        through a DNS name pointed at 127.0.0.1 (DNS rebinding)."""
        if not self.server.loopback_only:
            return True
        host = (self.headers.get("Host") or "").lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name in LOOPBACK_NAMES

    def _send(self, status: HTTPStatus, content: bytes, content_type: str, body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(content)))
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(content)

    def _stream_events(self) -> None:
        """Server-sent events: the state now, then again after every change, until the client leaves
        or the consumer stops."""
        state = self.server.state
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        with contextlib.suppress(OSError):  # the tab was closed, or the network went away
            version, data = state.snapshot()
            self.wfile.write(f"retry: {RECONNECT_MS}\ndata: {data}\n\n".encode())
            self.wfile.flush()
            while not state.closed:
                if state.wait_for_change(version, KEEP_ALIVE_S):
                    version, data = state.snapshot()
                    self.wfile.write(f"data: {data}\n\n".encode())
                elif not state.closed:
                    self.wfile.write(b": keep-alive\n\n")
                self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # an open event stream never keeps the consumer from exiting

    def __init__(self, state: DashboardState, host: str, port: int, routes: Mapping[str, Route], page: bool) -> None:
        self.address_family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        self.state = state
        self.routes = routes
        self.page = page
        super().__init__((host, port), _Handler)
        self.loopback_only = _is_loopback(self.server_address[0])

    def server_bind(self) -> None:
        """HTTPServer's, without its reverse DNS lookup of the address (slow where DNS is not there)."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


def _is_loopback(address: str) -> bool:
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(address).is_loopback
    return False


@contextlib.contextmanager
def serving(
    state: DashboardState, host: str, port: int, routes: Mapping[str, Route] | None = None, page: bool = True
) -> Iterator[str | None]:
    """Serve the page (unless `page` is False), and `routes`, while the block runs; yields its address,
    or None when port is 0 or the address cannot be used. A server that cannot start is one line on
    stderr, never a reason to stop the consumer: the totals matter more than the page."""
    if port == 0:
        yield None
        return
    what, flag = ("dashboard", "--dashboard-port") if page else ("metrics server", "--metrics-port")
    try:
        server = _Server(state, host, port, routes or {}, page)
    except OSError as error:
        reason = error.strerror or str(error)
        print_status(f"consumer: {what} not started: cannot listen on {host}:{port}: {reason} ({flag})")
        yield None
        return
    thread = threading.Thread(target=server.serve_forever, name=what, daemon=True)
    thread.start()
    address = url(host, server.server_address[1])
    if page:
        print_status(f"consumer: dashboard at {address}")
    try:
        yield address
    finally:
        state.close()
        server.shutdown()
        server.server_close()

"""The live dashboard: its data and server on their own, then the page in a real browser (Debian's
chromium through chromedriver, driven by selenium): its chart of windows fed by the test, and the whole
page while the real pipeline runs (local broker, real spark-submit), checked against the table the
consumer prints."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import sqlite3
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    SEED_SAMPLE,
    apt_install,
    consumer_args,
    printed_tables,
    producer_args,
    run_producer,
    send_values,
    start_consumer,
    summary_totals,
    wait_for_table,
)
from tests.reject_examples import order
from ventas.dashboard import DashboardState, products_view, serving, stream_view, url, windows_view
from ventas.lab.ports import free_port
from ventas.lab.processes import stop
from ventas.totals_db import StoredTotals, StoredWindow, WindowCounts

HOSTILE = "<img src=x onerror=alert(1)>"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
PAGE_TIMEOUT_S = 90
PLACEHOLDER = "\u2013"  # what the page shows before it has a value (an en dash)
# A progress report of the totals query as Spark 3.5 and 4 write it (query.lastProgress, trimmed).
PROGRESS = {
    "name": "totals",
    "batchId": 7,
    "timestamp": "2025-05-12T15:33:35.000Z",
    "numInputRows": 250,
    "inputRowsPerSecond": 124.5,
    "processedRowsPerSecond": 980.4,
    "durationMs": {"triggerExecution": 255},
    "sources": [
        {
            "description": "KafkaV2[Subscribe[ventas-events]]",
            "numInputRows": 250,
            "metrics": {"avgOffsetsBehindLatest": "1.5", "maxOffsetsBehindLatest": "3", "minOffsetsBehindLatest": "0"},
        }
    ],
}


# ---------------------------------------------------------------- the data, the server


def test_products_are_highest_first_with_exact_totals_as_strings() -> None:
    view = products_view({"Mouse": Decimal("29.97"), "Laptop": Decimal("6000.00"), "Cable": Decimal("29.97")})
    assert view == [
        {"name": "Laptop", "total": "6000.00", "share": 1.0},
        {"name": "Cable", "total": "29.97", "share": pytest.approx(29.97 / 6000)},
        {"name": "Mouse", "total": "29.97", "share": pytest.approx(29.97 / 6000)},
    ]
    assert products_view({"Free sample": Decimal("0.00")}) == [{"name": "Free sample", "total": "0.00", "share": 0.0}]


def test_stream_health_comes_from_the_kafka_sources_progress() -> None:
    assert stream_view(PROGRESS) == {
        "rows": 250,
        "input_rows_per_s": 124.5,
        "processed_rows_per_s": 980.4,
        "offsets_behind": {"avg": 1.5, "max": 3.0, "min": 0.0},
        "at": "2025-05-12T15:33:35.000Z",
    }
    # A source without these metrics shows nothing, rather than a made-up zero.
    assert stream_view({**PROGRESS, "sources": [{"metrics": {}}]})["offsets_behind"]["max"] is None


def test_the_state_shows_the_totals_and_the_counts_of_the_totals_query() -> None:
    state = DashboardState("ventas-events")
    state.show_totals(
        StoredTotals(
            batch_id=3,
            totals={"Laptop": Decimal("2000.00"), "Mouse": Decimal("0.10")},
            orders=13,
            rejected={"missing order_id": 2},
            committed_at="2025-05-12T15:33:35+00:00",
            late=4,
            undated=1,
            future=2,
        )
    )
    view = json.loads(state.snapshot()[1])
    assert (view["orders"], view["rejected"], view["grand_total"], view["batch"]) == (13, 2, "2000.10", 3)
    assert (view["late"], view["undated"], view["future"]) == (4, 1, 2)
    assert view["batch_time"] == "2025-05-12T15:33:35.000+00:00"
    state.show_progress(PROGRESS)
    state.show_idle()
    assert json.loads(state.snapshot()[1])["stream"]["offsets_behind"] == {"avg": 0, "max": 0, "min": 0}


def at(minute: int) -> datetime:
    """A window start of the tests' hour of sale_date."""
    return datetime(2025, 5, 12, 15, 0, tzinfo=UTC) + timedelta(minutes=minute)


def window(minute: int, orders: int, late: int, **totals: str) -> StoredWindow:
    return StoredWindow(at(minute), WindowCounts(orders, late, {name: Decimal(t) for name, t in totals.items()}))


def test_the_state_shows_each_windows_exact_total_and_the_top_products_oldest_first() -> None:
    state = DashboardState("ventas-events")
    assert "windows" not in json.loads(state.snapshot()[1])  # no chart until the consumer gives windows
    seen = state.snapshot()[0]
    windows = [
        window(30, 3, 0, Laptop="2000.00", Mouse="9.99", Cable="5.00"),
        window(33, 4, 2, Smartwatch="4203.00", Keyboard="49.99", Webcam="5.00", Tripod="0.01"),
    ]
    state.show_windows(windows, 60)
    assert state.wait_for_change(seen, 0)
    assert json.loads(state.snapshot()[1])["windows"] == {
        "length_s": 60,
        "span_s": 3600,
        "title": "Sales per 1-minute window",
        # Over both windows, highest first; Cable and Webcam tie at 5.00, and the name decides.
        "top": ["Smartwatch", "Laptop", "Keyboard", "Mouse", "Cable"],
        "windows": [
            {
                "start": "2025-05-12T15:30:00.000+00:00",
                "orders": 3,
                "late": 0,
                "total": "2014.99",
                "top": {"Laptop": "2000.00", "Mouse": "9.99", "Cable": "5.00"},
            },
            {
                "start": "2025-05-12T15:33:00.000+00:00",
                "orders": 4,
                "late": 2,
                "total": "4258.00",
                "top": {"Smartwatch": "4203.00", "Keyboard": "49.99"},
            },
        ],
    }


def test_window_totals_are_exact_past_decimals_default_precision() -> None:
    big = "123456789012345678901234567890123456.78"  # decimal(38,2) at its widest; Decimal rounds at 28 digits
    view = windows_view([window(0, 2, 0, A=big, B=big)], 90)
    assert view["windows"][0]["total"] == "246913578024691357802469135780246913.56"
    assert view["title"] == "Sales per 90-second window"
    assert windows_view([], 60)["windows"] == []


def get(address: str, path: str, host: str | None = None, method: str = "GET") -> tuple[int, dict, bytes]:
    request = urllib.request.Request(address.rstrip("/") + path, method=method, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read() if path != "/events" else b""
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_the_server_serves_the_page_and_its_data_and_takes_no_input() -> None:
    state = DashboardState("ventas-events")
    state.show_totals(StoredTotals(batch_id=0, totals={HOSTILE: Decimal("11.00")}, orders=1))
    with serving(state, "127.0.0.1", free_port()) as address:
        assert address
        status, headers, page = get(address, "/")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert "script-src 'self'" in headers["Content-Security-Policy"] and b"<script src=" in page
        assert headers["Server"] == "ventas-dashboard"
        assert b"http" not in page.replace(b"http-equiv", b"")  # nothing from another site
        status, _, data = get(address, "/data.json")
        assert json.loads(data)["products"] == [{"name": HOSTILE, "total": "11.00", "share": 1.0}]
        assert get(address, "/events")[1]["Content-Type"].startswith("text/event-stream")
        assert get(address, "/", method="POST")[0] == 501
        assert get(address, "/../consumer.py")[0] == 404
        # Bound to loopback, it answers loopback names only (a DNS name rebound to 127.0.0.1 gets nothing).
        assert get(address, "/data.json", host="attacker.example:8050")[0] == 421
        assert get(address, "/data.json", host="localhost")[0] == 200


def test_an_event_stream_gets_the_state_now_and_after_every_change() -> None:
    state = DashboardState("ventas-events")
    with serving(state, "127.0.0.1", free_port()) as address:
        assert address
        with urllib.request.urlopen(address + "events", timeout=10) as events:
            first = _next_event(events)
            state.show_totals(
                StoredTotals(
                    batch_id=1, totals={"Laptop": Decimal("2000.00")}, orders=1, rejected={"missing order_id": 1}
                )
            )
            second = _next_event(events)  # the table and its counts come in one event
    assert first["products"] == [] and second["products"][0]["total"] == "2000.00"
    assert (second["orders"], second["rejected"]) == (1, 1)


def _next_event(stream: Any) -> dict:
    while not (line := stream.readline().decode()).startswith("data: "):
        pass
    return json.loads(line.removeprefix("data: "))


def test_a_port_in_use_or_zero_leaves_the_consumer_without_a_page(capsys: pytest.CaptureFixture[str]) -> None:
    state = DashboardState("ventas-events")
    with serving(state, "127.0.0.1", 0) as off:
        assert off is None
    with serving(state, "127.0.0.1", free_port()) as first:
        port = int(first.rsplit(":", 1)[1].strip("/"))
        with serving(DashboardState("t"), "127.0.0.1", port) as second:
            assert second is None
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"consumer: dashboard not started: cannot listen on 127.0.0.1:{port}: Address already in use (--dashboard-port)"
    )


# ---------------------------------------------------------------- in a browser


def ensure_chromium() -> None:
    """Debian's chromium and chromium-driver, installed with apt-get when missing (CI runs as root)."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        apt_install("chromium", "chromium-driver")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver

    ensure_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1100"):
        options.add_argument(argument)
    # The driver's path is given, so selenium does not look for (or download) one of its own.
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def chart_bars(driver: Any) -> dict[str, tuple[Decimal, int]]:
    """The bars of the chart of windows: by the window's start as the view gives it (ISO, milliseconds,
    `2025-05-12T15:30:00.000+00:00`), its exact total and its late orders; empty when no chart is drawn.
    Read in one script, so the page cannot redraw the chart between two reads."""
    bars = driver.execute_script(
        "return [...document.querySelectorAll('#windows-chart:not([hidden]) rect.window-bar')]"
        ".map((bar) => [bar.dataset.start, bar.dataset.total, bar.dataset.late])"
    )
    return {start: (Decimal(total), int(late)) for start, total, late in bars}


def page_reading(driver: Any) -> dict[str, Any]:
    """What the page shows, read as a person reads it (rendered text; totals without the grouping commas),
    and the chart's bars (chart_bars)."""
    from selenium.webdriver.common.by import By

    def text(element_id: str) -> str:
        return driver.find_element(By.ID, element_id).text

    def number(element_id: str) -> Decimal:
        return Decimal(text(element_id).replace(",", ""))

    rows = driver.find_elements(By.CSS_SELECTOR, "#products li")
    products = [
        (
            row.find_element(By.CLASS_NAME, "name").text,
            Decimal(row.find_element(By.CLASS_NAME, "total").text.replace(",", "")),
        )
        for row in rows
    ]
    return {
        "products": products,
        "grand_total": number("grand-total") if text("grand-total") != PLACEHOLDER else None,
        "orders": text("orders"),
        "late": text("late"),
        "undated": text("undated"),
        "future": text("future"),
        "rejected": text("rejected"),
        "windows": chart_bars(driver),
        "batch": text("batch"),
        "status": driver.find_element(By.ID, "status").get_attribute("data-state"),
    }


def wait_for_page(driver: Any, check: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + PAGE_TIMEOUT_S
    reading: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:  # the page may replace its rows while they are read
            reading = page_reading(driver)
        except StaleElementReferenceException:
            continue
        if check(reading):
            return reading
        time.sleep(0.2)
    raise AssertionError(f"the page never showed {what}; it shows {reading}")


# Each drawn element of the chart with what a test checks of it, read in one script.
CHART_ELEMENTS = """
const read = (selector, keys) => [...document.querySelectorAll(selector)].map((element) => Object.fromEntries(
  keys.map((key) => [key, key === 'title' ? element.querySelector('title').textContent
                                          : element.dataset[key] ?? element.getAttribute(key)])));
return {
  bars: read('rect.window-bar', ['start', 'x', 'height', 'title']),
  segments: read('rect.window-segment', ['start', 'product', 'total', 'class']),
  late: read('.late-marker', ['start', 'late', 'title']),
  times: [...document.querySelectorAll('#windows-svg .window-time')].map((label) => label.textContent),
  legend: [...document.querySelectorAll('#windows-legend li')].map((item) => item.textContent),
};
"""


def test_the_chart_draws_a_bar_per_window_and_follows_each_new_set_of_windows(browser: Any, tmp_path: Path) -> None:
    """The chart in the page, fed by the test (no Kafka, no Spark): a bar per window placed by its start
    and as tall as its exact total, the top products inside it, a marker on the window with late orders;
    the next windows redraw it on the same page, with no reload; a hostile product name stays text."""
    from selenium.webdriver.common.by import By

    state = DashboardState("ventas-events")
    state.show_totals(
        StoredTotals(batch_id=2, totals={"Laptop": Decimal("6000.00")}, orders=6, late=2, undated=1, future=3)
    )
    with serving(state, "127.0.0.1", free_port()) as address:
        assert address
        browser.get(address)
        page = wait_for_page(browser, lambda page: page["orders"] == "6", "the totals of batch 2")
        assert (page["late"], page["undated"], page["future"], page["windows"]) == ("2", "1", "3", {})
        assert browser.find_element(By.ID, "windows-empty").is_displayed()  # no windows yet: a line of text

        state.show_windows(
            [
                window(30, 3, 0, Laptop="2000.00", Mouse="9.99"),
                window(31, 2, 2, Smartwatch="4203.00", **{HOSTILE: "11.00"}),
                window(33, 1, 0, Laptop="4000.00"),
            ],
            60,
        )
        bars = {
            "2025-05-12T15:30:00.000+00:00": (Decimal("2009.99"), 0),
            "2025-05-12T15:31:00.000+00:00": (Decimal("4214.00"), 2),
            "2025-05-12T15:33:00.000+00:00": (Decimal("4000.00"), 0),
        }
        wait_for_page(browser, lambda page: page["windows"] == bars, f"the bars {bars}")
        assert browser.find_element(By.ID, "windows-title").text == "Sales per 1-minute window"
        assert not browser.find_element(By.ID, "windows-empty").is_displayed()
        chart = browser.execute_script(CHART_ELEMENTS)
        (x30, h30), (x31, h31), (x33, h33) = ((float(b["x"]), float(b["height"])) for b in chart["bars"])
        assert h30 / h31 == pytest.approx(2009.99 / 4214) and h33 / h31 == pytest.approx(4000 / 4214)
        assert x33 - x31 == pytest.approx(2 * (x31 - x30))  # the window without sales is a gap
        assert [s for s in chart["segments"] if s["start"].startswith("2025-05-12T15:31")] == [
            {"start": "2025-05-12T15:31:00.000+00:00", "product": name, "total": total, "class": f"window-segment {c}"}
            for name, total, c in (("Smartwatch", "4203.00", "series-1"), (HOSTILE, "11.00", "series-2"))
        ]
        assert chart["late"] == [{"start": "2025-05-12T15:31:00.000+00:00", "late": "2", "title": "2 late orders"}]
        assert chart["legend"] == ["Laptop", "Smartwatch", HOSTILE, "Mouse", "Other products"]
        assert browser.find_elements(By.TAG_NAME, "img") == []
        # A few window starts, in the browser's (here this machine's) time: every 5 minutes at this width.
        local = at(30).astimezone()
        assert 3 <= len(chart["times"]) <= 15
        assert any(label.startswith((f"{local:%H:%M}", f"{local:%I:%M}")) for label in chart["times"]), chart["times"]

        browser.execute_script("window.sameDocument = true")
        state.show_windows([window(31, 2, 2, Smartwatch="4203.00"), window(34, 5, 1, Laptop="8000.00")], 60)
        bars = {
            "2025-05-12T15:31:00.000+00:00": (Decimal("4203.00"), 2),
            "2025-05-12T15:34:00.000+00:00": (Decimal("8000.00"), 1),
        }
        wait_for_page(browser, lambda page: page["windows"] == bars, f"the bars {bars}")
        assert browser.execute_script("return window.sameDocument") is True
        chart = browser.execute_script(CHART_ELEMENTS)
        assert [marker["title"] for marker in chart["late"]] == ["2 late orders", "1 late order"]
        assert chart["legend"] == ["Laptop", "Smartwatch", "Other products"]
        browser.save_screenshot(str(tmp_path / "chart.png"))

        browser.set_window_size(390, 844)  # a phone: the chart is redrawn to its width, nothing wider than the screen
        try:
            wait_for_page(
                browser,
                lambda _: browser.execute_script(
                    "return document.querySelector('#windows-svg').viewBox.baseVal.width < 390"
                ),
                "the chart redrawn for a phone",
            )
            assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
            assert chart_bars(browser) == bars
            browser.save_screenshot(str(tmp_path / "chart-phone.png"))
        finally:
            browser.set_window_size(1280, 1100)


# ---------------------------------------------------------------- with the real pipeline


def last_batch(out: Path) -> tuple[int, dict[str, Decimal]]:
    """The consumer's last printed table and its batch number."""
    text = out.read_text()
    return int(re.findall(r"^Batch: (\d+)$", text, flags=re.MULTILINE)[-1]), printed_tables(text)[-1]


def shows(table: dict[str, Decimal], batch: int, orders: int, rejected: int) -> Callable[[dict[str, Any]], bool]:
    """The page shows this table, highest first as printed, for this batch, with these counts."""
    rows = sorted(table.items(), key=lambda item: (-item[1], item[0]))
    return lambda page: (
        page["products"] == rows
        and page["batch"] == f"batch {batch}"
        and (
            page["grand_total"],
            page["orders"],
            page["rejected"],
        )
        == (sum(table.values()), str(orders), str(rejected))
    )


@pytest.mark.integration
def test_the_page_follows_the_consumers_table_live(
    kafka_bootstrap: str, topic: str, tmp_path: Path, browser: Any
) -> None:
    """Open the page while the consumer runs: it shows the printed table, changes as orders arrive
    without a reload, shows a hostile product name as text, and comes back after a restart."""
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    hostile_order = order({"name": HOSTILE, "cantidad": 2, "price": 5.5}, order_id="o-2")
    send_values(kafka_bootstrap, topic, [SEED_SAMPLE, hostile_order, b"not json at all", b"[1, 2, 3]"])
    port = free_port()
    args = consumer_args(kafka_bootstrap, topic, tmp_path, "--dashboard-port", str(port))
    out = tmp_path / "consumer.txt"
    consumer = start_consumer(args, out)
    try:
        first = {"Smartwatch": Decimal("4203.00"), "Laptop": Decimal("2000.00"), HOSTILE: Decimal("11.00")}
        wait_for_table(out, consumer, first)
        assert f"consumer: dashboard at http://127.0.0.1:{port}/" in out.read_text()
        browser.get(url("127.0.0.1", port))
        batch, printed = last_batch(out)
        page = wait_for_page(browser, shows(printed, batch, orders=2, rejected=2), f"batch {batch}: {printed}")
        assert page["status"] == "live" and printed == first

        # The hostile name is text: no element made of it, no script run.
        name = browser.find_element(By.XPATH, "//*[@id='products']//span[@class='name'][contains(., 'onerror')]")
        assert name.text == HOSTILE and name.get_attribute("innerHTML") == "&lt;img src=x onerror=alert(1)&gt;"
        assert browser.find_elements(By.TAG_NAME, "img") == []
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text  # noqa: B018

        # A progress event with the same totals leaves the rows as they are (a reader's selection stays).
        browser.execute_script("window.firstRow = document.querySelector('#products li')")
        progress_at = browser.find_element(By.ID, "stream-at").text
        wait_for_page(browser, lambda _: browser.find_element(By.ID, "stream-at").text != progress_at, "progress")
        assert browser.execute_script("return document.querySelector('#products li') === window.firstRow")

        # New orders arrive: the same page (not reloaded) follows the next printed table.
        browser.execute_script("window.sameDocument = true")
        send_values(kafka_bootstrap, topic, [order({"name": "Laptop", "cantidad": 2, "price": 2000}), b"42"])
        wait_for_table(out, consumer, {**first, "Laptop": Decimal("6000.00")})
        batch, printed = last_batch(out)
        wait_for_page(browser, shows(printed, batch, orders=3, rejected=3), f"batch {batch}: {printed}")
        assert browser.execute_script("return window.sameDocument") is True

        # How the stream keeps up, from Spark's progress: rates, and nothing left behind once caught up.
        rates = [browser.find_element(By.ID, i).text for i in ("input-rate", "processed-rate")]
        assert all(re.fullmatch(r"[\d,]+\.\d records/s", rate) for rate in rates), rates
        behind = browser.find_element(By.ID, "behind")
        assert re.fullmatch(r"[\d,]+ records.*", behind.text), behind.text
        assert PLACEHOLDER not in browser.find_element(By.ID, "batch-time").text

        browser.save_screenshot(str(tmp_path / "dashboard.png"))
        browser.set_window_size(390, 844)  # a phone: one column, nothing wider than the screen
        assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        browser.save_screenshot(str(tmp_path / "dashboard-phone.png"))
        browser.set_window_size(1280, 1100)
    finally:
        code = stop(consumer, signal.SIGINT)
    assert code == 0, out.read_text()[-3000:]
    assert out.read_text().splitlines()[-1].startswith("consumer: stopped after batch "), out.read_text()[-3000:]
    wait_for_page(browser, lambda page: page["status"] == "lost", "that the consumer is gone")

    # Restarted with nothing new to read: the same page reconnects and shows the latest totals and
    # counts again (both are in the totals database); then it follows on.
    out = tmp_path / "again.txt"
    again = start_consumer(args, out)
    try:
        wait_for_page(
            browser, lambda page: page["status"] == "live" and shows(printed, batch, 3, 3)(page), "the restart"
        )
        send_values(kafka_bootstrap, topic, [order({"name": "Mouse", "cantidad": 1, "price": 9.99}, order_id="o-4")])
        wait_for_table(out, again, {**printed, "Mouse": Decimal("9.99")})
        batch, printed = last_batch(out)
        wait_for_page(browser, shows(printed, batch, orders=4, rejected=3), f"batch {batch}: {printed}")
    finally:
        assert stop(again, signal.SIGINT) == 0, out.read_text()[-3000:]


def stored_chart(database: Path) -> dict[str, tuple[Decimal, int]]:
    """What the chart must show: each window's total and late orders, as the `sqlite3` shell reads them
    from the consumer's database (all within the hour the chart spans, in these tests)."""
    with contextlib.closing(sqlite3.connect(database)) as shell:
        late = dict(shell.execute("SELECT window_start, late_orders FROM window_orders"))
        sales = shell.execute("SELECT window_start, total_sales FROM window_sales").fetchall()
    totals = {start: Decimal("0.00") for start in late}
    for start, total in sales:
        totals[start] += Decimal(total)
    return {start: (totals[start], late[start]) for start in late}


def test_the_page_draws_sales_per_window_live(kafka_bootstrap: str, topic: str, tmp_path: Path, browser: Any) -> None:
    """A replay of sales (a minute of sale_date a second) with late orders: the chart has a bar per window
    the database holds, with its exact total and late orders, and follows new windows without a reload."""
    port = free_port()
    out, database = tmp_path / "consumer.txt", tmp_path / "totals.sqlite3"
    consumer = start_consumer(consumer_args(kafka_bootstrap, topic, tmp_path, "--dashboard-port", str(port)), out)
    # Late by more than the first part spans: the second part's late orders are late whatever its batches.
    replay = ("--speed", "60", "--late-fraction", "0.05", "--late-by", "15 minutes")
    summaries = []
    try:
        for part, start in enumerate(("2025-05-12T08:00", "2025-05-12T08:10")):
            summaries.append(tmp_path / f"summary-{part}.json")
            args = producer_args(kafka_bootstrap, topic, summaries[-1], 400, 100, 50 + part)
            produced = run_producer(*args, "--start-date", start, *replay)
            assert produced.returncode == 0, produced.stderr
            expected = dict(sum((Counter(summary_totals(s)) for s in summaries), Counter()))
            wait_for_table(out, consumer, expected)
            if part == 0:
                browser.get(url("127.0.0.1", port))
                browser.execute_script("window.sameDocument = true")
            chart = stored_chart(database)
            assert len(chart) >= 6 * (part + 1) and (part == 0 or any(late for _, late in chart.values())), chart
            wait_for_page(browser, lambda page, chart=chart: page["windows"] == chart, f"the windows {chart}")
        assert browser.execute_script("return window.sameDocument") is True
    finally:
        assert stop(consumer, signal.SIGINT) == 0, out.read_text()[-3000:]

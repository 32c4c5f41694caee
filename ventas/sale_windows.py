"""Sales over time: windows of the order's own `sale_date`, the same for the consumer, the producer's
ground truth, the report and the dashboard.

A window is `[start, start + length)`, aligned on the Unix epoch as Spark's `window()` aligns them, and
named by its start, a UTC instant. `sale_date` carries no zone (`12/05/2025 15:33:35`): it is read in
`--sale-date-zone`, by default this machine's zone, the one the producer writes it in.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ventas.config import env

SECONDS_PER_UNIT = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
DEFAULT_WINDOW = "1 minute"
DEFAULT_ALLOWED_LATENESS = "2 minutes"
DEFAULT_ALLOWED_FUTURE = "1 day"
DEFAULT_WINDOW_RETENTION = "2 days"


def duration(text: str) -> int:
    """argparse type: a length of time as Spark writes intervals ('1 minute', '90 seconds', '2 days'),
    or shortened ('30s', '5m', '1h', '2d'), or '0', in whole seconds."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:(second|minute|hour|day)s?|([smhd]))?\s*", text, flags=re.IGNORECASE)
    if not match or (match[2] is None and match[3] is None and int(match[1]) != 0):
        raise argparse.ArgumentTypeError(f"not a length of time like '1 minute' or '90 seconds': {text!r}")
    unit = (match[2] or match[3] or "s").lower()
    return int(match[1]) * next(seconds for name, seconds in SECONDS_PER_UNIT.items() if name.startswith(unit))


def describe(seconds: int) -> str:
    """A length of time as a user writes it: 60 -> '1 minute', 90 -> '90 seconds'."""
    for unit in ("day", "hour", "minute", "second"):
        count, rest = divmod(seconds, SECONDS_PER_UNIT[unit])
        if not rest and count:
            return f"{count} {unit}" + ("s" if count != 1 else "")
    return "0 seconds"


def window_name(length_s: int) -> str:
    """A window as a title names it: 60 -> '1-minute window', 90 -> '90-second window'."""
    return f"{describe(length_s).removesuffix('s').replace(' ', '-')} window"


def zone(text: str) -> str:
    """argparse type: an IANA time zone name ('Europe/Madrid', 'UTC'), as Spark's session time zone takes it."""
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(f"not a time zone name like 'Europe/Madrid' or 'UTC': {text!r}") from None
    return text


def add_window_argument(parser: argparse.ArgumentParser) -> None:
    """--window, shared by the consumer, the producer (its ground truth) and the report."""
    parser.add_argument(
        "--window",
        type=duration,
        default=env("WINDOW", DEFAULT_WINDOW),
        help="length of the windows of sale_date that sales are totalled in; fixed per totals database; "
        "0 turns them off (env WINDOW; default %(default)s)",
    )


def add_zone_argument(parser: argparse.ArgumentParser) -> None:
    """--sale-date-zone, shared by the consumer, the producer and the report."""
    parser.add_argument(
        "--sale-date-zone",
        type=zone,
        default=env("SALE_DATE_ZONE"),
        help="time zone sale_date is written in, e.g. Europe/Madrid (env SALE_DATE_ZONE; default this "
        "machine's zone, the producer's)",
    )


def zone_info(name: str | None) -> tzinfo | None:
    """The zone of --sale-date-zone; None is this machine's."""
    return ZoneInfo(name) if name else None


def sale_instant(sale_date: datetime, sale_zone: str | None) -> datetime:
    """A sale_date as written (no zone) as the UTC instant it names in `sale_zone`."""
    if sale_zone:
        return sale_date.replace(tzinfo=ZoneInfo(sale_zone)).astimezone(UTC)
    return sale_date.astimezone(UTC)  # a naive datetime is read in this machine's zone


def window_start(instant: datetime, window_s: int) -> datetime:
    """The start of the window that holds `instant` (UTC)."""
    seconds = int(instant.timestamp())
    return datetime.fromtimestamp(seconds - seconds % window_s, UTC)


@dataclass(frozen=True)
class WindowSettings:
    """How the consumer totals sales per window; `length_s` 0: not at all."""

    length_s: int
    allowed_lateness_s: int
    retention_s: int
    allowed_future_s: int  # a sale_date further ahead of the clock is in the future: in no window


CHART_SPAN_S = 3600  # the dashboard charts the windows of the last hour of sale_date


def chart_start(newest_sale_at: datetime, length_s: int) -> datetime:
    """The first window the dashboard charts: the hour up to the newest sale_date."""
    return window_start(newest_sale_at - timedelta(seconds=CHART_SPAN_S - length_s), length_s)

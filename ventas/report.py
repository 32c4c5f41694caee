"""Sales over time: the orders, late orders and sales of each window of sale_date that the consumer's
totals database holds, for the last N windows, oldest first, in the console's table layout.

    python -m ventas.report [--totals-db FILE|postgresql://USER@HOST:PORT/DATABASE] [--topic TOPIC]
                            [--checkpoint-location DIR]
                            [--last N] [--product NAME] [--sale-date-zone ZONE] [--log-level LEVEL]

It reads the database the consumer writes, while it runs, and never creates one: a SQLite file that is
not there, or a database that keeps no windows, is reported in one line.
"""

from __future__ import annotations

import logging
from decimal import Decimal

from schemas import SALE_DATE_STRFTIME, TOTAL_SALES_COLUMN
from ventas.config import (
    DEFAULT_TOPIC,
    STATE_HOME,
    Parser,
    UserError,
    env,
    fail,
    log_level,
    positive_int,
    setup_logging,
)
from ventas.consumer_settings import TOTALS_FILE, default_checkpoint_location, default_totals_db
from ventas.sale_windows import add_zone_argument, describe, window_name, zone_info
from ventas.table import format_rows
from ventas.totals_db import StoredWindow, TotalsDb, money_sum, sqlite_path

log = logging.getLogger(__name__)

DEFAULT_LAST = "10"
WINDOW_START_COLUMN = "Window start"
ORDERS_COLUMN = "Orders"
LATE_COLUMN = "Late"
ZERO = Decimal("0.00")


def build_parser() -> Parser:
    parser = Parser(prog="report", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--totals-db",
        default=env("TOTALS_DB"),
        help="the consumer's totals database: a SQLite file, or postgresql://USER@HOST:PORT/DATABASE "
        "(password from PGPASSWORD or ~/.pgpass) (env TOTALS_DB; "
        f"default the consumer's: {TOTALS_FILE} in a local --checkpoint-location, "
        f"{STATE_HOME}/totals/TOPIC.sqlite3 with the default checkpoint)",
    )
    parser.add_argument(
        "--topic",
        default=env("KAFKA_TOPIC", DEFAULT_TOPIC),
        help="the topic whose consumer's default --totals-db is read (env KAFKA_TOPIC; default %(default)s)",
    )
    parser.add_argument(
        "--checkpoint-location",
        default=env("CHECKPOINT_LOCATION"),
        help="the consumer's checkpoint, whose default --totals-db is read "
        f"(env CHECKPOINT_LOCATION; default {STATE_HOME}/checkpoints/TOPIC)",
    )
    parser.add_argument(
        "--last",
        type=positive_int,
        default=DEFAULT_LAST,
        metavar="N",
        help="show the N newest windows the database holds (default %(default)s)",
    )
    parser.add_argument(
        "--product",
        metavar="NAME",
        help="one product's sales in each of the last N windows, 0.00 where it sold nothing; Orders still "
        "counts every order of the window, as the database keeps no orders per product (default: every "
        "product's sales added up, and the late orders)",
    )
    add_zone_argument(parser)  # the zone the windows were cut in is the one their starts are shown in
    parser.add_argument(
        "--log-level",
        type=log_level,
        default=env("LOG_LEVEL", "WARNING"),
        help="DEBUG, INFO, WARNING or ERROR (env LOG_LEVEL; default %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    checkpoint_location = args.checkpoint_location or default_checkpoint_location(args.topic)
    target = args.totals_db or default_totals_db(args.topic, checkpoint_location)
    try:
        print(sales_over_time(target, args.last, args.product, args.sale_date_zone))
    except UserError as error:  # TotalsDbError among them: the database unreachable, or not one
        fail(parser.prog, error)


def sales_over_time(target: str, last: int, product: str | None, zone_name: str | None) -> str:
    """The title and table of the `last` newest windows in database `target`, starts shown in zone
    `zone_name` (None: this machine's)."""
    db = open_existing(target)
    try:
        length_s = db.window_length()
        if length_s is None and db.read().checkpoint_id is None:  # not the consumer's: say so, not why windows are off
            raise UserError(
                f"the totals database {db.display} holds no totals: run the consumer first, or point --totals-db "
                "at its database"
            )
        if not length_s:
            raise UserError(windows_off(db.display, length_s))
        windows = db.last_windows(last)
        log.info("%d windows of %s from %s", len(windows), describe(length_s), db.display)
    finally:
        db.close()
    sales = f"Sales of {product}" if product is not None else "Sales"
    title = f"{sales} per {window_name(length_s)} of sale_date ({zone_name or 'local time'})"
    return f"{title}\n{format_rows(*table(windows, product, zone_name))}"


def table(
    windows: list[StoredWindow], product: str | None, zone_name: str | None
) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The header and rows of `windows`: every product's sales and the late orders, or `product`'s sales."""
    zone = zone_info(zone_name)
    rows = []
    for window in windows:
        start, orders = window.start.astimezone(zone).strftime(SALE_DATE_STRFTIME), str(window.counts.orders)
        if product is None:
            rows.append((start, orders, str(window.counts.late), f"{money_sum(window.counts.totals.values()):f}"))
        else:
            rows.append((start, orders, f"{window.counts.totals.get(product, ZERO):f}"))
    if product is None:
        return (WINDOW_START_COLUMN, ORDERS_COLUMN, LATE_COLUMN, TOTAL_SALES_COLUMN), rows
    return (WINDOW_START_COLUMN, ORDERS_COLUMN, TOTAL_SALES_COLUMN), rows


def open_existing(target: str) -> TotalsDb:
    """The database at `target`; TotalsDb.open would create a SQLite file that is not there, so that is
    refused first."""
    file = sqlite_path(target)
    if file is not None and not file.is_file():
        raise UserError(f"no totals database at {file}: run the consumer first, or point --totals-db at its database")
    return TotalsDb.open(target)


def windows_off(display: str, length_s: int | None) -> str:
    """Why database `display` keeps no windows, and what gives some."""
    if length_s == 0:
        return (
            f"the totals database {display} keeps no sales per window of sale_date: its consumer runs with "
            "--window 0; a consumer with a --window and a --totals-db of its own keeps them"
        )
    return (
        f"the totals database {display} keeps no sales per window of sale_date: a consumer without windows "
        "(an earlier version) wrote it; the current consumer adds them from its next batch"
    )


if __name__ == "__main__":
    main()

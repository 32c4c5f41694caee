"""consumer.py through real spark-submit and the real Kafka source, against the local broker."""

from __future__ import annotations

import signal
import subprocess
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from tests.helpers import (
    KEEPS_REJECTED,
    SEED_SAMPLE,
    consumer_args,
    printed_lines,
    printed_tables,
    producer_args,
    rejected_by_reason,
    rejected_rows,
    run_consumer,
    run_producer,
    send_values,
    start_consumer,
    summary_totals,
    wait_for_table,
)
from tests.reject_examples import REJECT_EXAMPLES, order
from tests.test_transform import LARGEST_LINE, LARGEST_TOTAL
from ventas.lab.ports import free_port
from ventas.lab.processes import pipeline_env, stop

pytestmark = pytest.mark.integration


def produce(bootstrap: str, topic: str, summary: Path, count: int, seed: int) -> dict[str, Decimal]:
    result = run_producer(*producer_args(bootstrap, topic, summary, count=count, rate=0, seed=seed))
    assert result.returncode == 0, result.stderr
    return summary_totals(summary)


def test_available_now_totals_equal_the_producers_ground_truth(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    truth = produce(kafka_bootstrap, topic, tmp_path / "summary.json", count=3000, seed=5)

    result = run_consumer(*consumer_args(kafka_bootstrap, topic, tmp_path, "--available-now"))
    assert result.returncode == 0, result.stderr
    assert printed_tables(result.stdout)[-1] == truth
    assert "Traceback" not in result.stderr and " INFO " not in result.stderr

    # A restart resumes from the checkpoint: new orders are added once, old ones not again.
    more = produce(kafka_bootstrap, topic, tmp_path / "more.json", count=1000, seed=6)
    again = run_consumer(*consumer_args(kafka_bootstrap, topic, tmp_path, "--available-now"))
    assert again.returncode == 0, again.stderr
    expected = {name: truth.get(name, 0) + more.get(name, 0) for name in truth.keys() | more.keys()}
    assert printed_tables(again.stdout)[-1] == expected

    # Nothing new to read: the latest table is still printed.
    idle = run_consumer(*consumer_args(kafka_bootstrap, topic, tmp_path, "--available-now"))
    assert idle.returncode == 0, idle.stderr
    assert printed_tables(idle.stdout) == [expected]


def test_the_seed_sample_alone(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    send_values(kafka_bootstrap, topic, [SEED_SAMPLE])
    result = run_consumer(*consumer_args(kafka_bootstrap, topic, tmp_path, "--available-now"))
    assert result.returncode == 0, result.stderr
    assert ":: resolving dependencies ::" not in result.stdout + result.stderr  # no Ivy: --jars
    assert printed_tables(result.stdout)[-1] == {"Smartwatch": Decimal("4203.00"), "Laptop": Decimal("2000.00")}
    assert "|Smartwatch|4203.00    |" in result.stdout


def test_the_readmes_packages_command_works_as_written(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    """`spark-submit --packages <connector> consumer.py`, as the README and the seed write it: Ivy
    resolves it from what `make deps` put into ~/.m2/repository."""
    import sys

    from ventas.jars import spark_kafka_package
    from ventas.lab.processes import ROOT

    send_values(kafka_bootstrap, topic, [SEED_SAMPLE])
    spark_submit = Path(sys.executable).parent / "spark-submit"
    command = [str(spark_submit), "--packages", spark_kafka_package(), str(ROOT / "consumer.py")]
    result = subprocess.run(
        [*command, *consumer_args(kafka_bootstrap, topic, tmp_path, "--available-now")],
        capture_output=True,
        text=True,
        env=pipeline_env(),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert printed_tables(result.stdout)[-1] == {"Smartwatch": Decimal("4203.00"), "Laptop": Decimal("2000.00")}


def test_garbage_is_counted_and_kept_and_never_reaches_the_totals(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    valid = order({"name": "Laptop", "cantidad": 1, "price": 2000}, {"name": "Mouse", "cantidad": 3, "price": 9.99})
    garbage = [*REJECT_EXAMPLES, b"x" * 1_000_000, b"\xff\xfe\x00garbage"]
    values = [valid] + [v for g in garbage for v in (g, valid)]
    send_values(kafka_bootstrap, topic, values)

    result = run_consumer(*consumer_args(kafka_bootstrap, topic, tmp_path, "--available-now"))
    assert result.returncode == 0, result.stderr
    n_valid = len(garbage) + 1
    assert printed_tables(result.stdout)[-1] == {"Laptop": 2000 * n_valid, "Mouse": Decimal("29.97") * n_valid}
    assert f"Rejected: {len(garbage)} records in batch 0 ({len(garbage)} since start): " in result.stdout
    reasons = Counter(REJECT_EXAMPLES.values()) + Counter(["not a JSON object of the order schema", "not valid UTF-8"])
    assert rejected_by_reason(result.stdout) == reasons
    rejected = rejected_rows(tmp_path / "rejected")
    if KEEPS_REJECTED:
        assert Counter(r["reason"] for r in rejected) == reasons


def test_rejects_not_kept_are_counted_by_reason_across_restarts_from_one_read(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """--keep-rejected false: the totals query alone reads the topic; it counts each reject, by reason."""
    valid = order({"name": "Laptop", "cantidad": 1, "price": 2000})
    send_values(kafka_bootstrap, topic, [valid, b"not json", None, valid, b"not json either"])
    args = consumer_args(kafka_bootstrap, topic, tmp_path, "--available-now", "--keep-rejected", "false")

    result = run_consumer(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert printed_tables(result.stdout)[-1] == {"Laptop": Decimal("4000.00")}
    assert (
        "Rejected: 3 records in batch 0 (3 since start): 2 not a JSON object of the order schema, "
        "1 tombstone (null value); not kept (--keep-rejected false)"
    ) in result.stdout
    assert not (tmp_path / "rejected").exists()
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir() if p.is_dir()) == ["sales"]

    send_values(kafka_bootstrap, topic, [valid, None])
    again = run_consumer(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert printed_tables(again.stdout)[-1] == {"Laptop": Decimal("6000.00")}
    assert "Rejected: 1 records in batch 1 (4 since start): 1 tombstone (null value); not kept" in again.stdout


def test_the_largest_orders_add_up_exactly(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    """Through Spark 4's default ANSI SQL mode: no overflow error, no null, no rounding."""
    send_values(kafka_bootstrap, topic, [order(LARGEST_LINE, order_id=str(i)) for i in range(300)])

    result = run_consumer(*consumer_args(kafka_bootstrap, topic, tmp_path, "--available-now"))
    assert result.returncode == 0, result.stdout[-3000:]
    assert printed_tables(result.stdout)[-1] == {"Yacht": 300 * LARGEST_TOTAL}


def test_streaming_refreshes_the_table_as_orders_arrive(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    consumer = start_consumer(consumer_args(kafka_bootstrap, topic, tmp_path, "--trigger-interval", "1 second"), out)
    try:
        send_values(kafka_bootstrap, topic, [SEED_SAMPLE])
        wait_for_table(out, consumer, {"Smartwatch": Decimal("4203.00"), "Laptop": Decimal("2000.00")})
        send_values(kafka_bootstrap, topic, [order({"name": "Laptop", "cantidad": 2, "price": 2000})])
        wait_for_table(out, consumer, {"Laptop": Decimal("6000.00"), "Smartwatch": Decimal("4203.00")})
    finally:
        code = stop(consumer, signal.SIGINT)  # as a terminal's Ctrl-C does
    assert code == 0
    assert "Traceback" not in out.read_text() and "ERROR" not in out.read_text()
    assert out.read_text().splitlines()[-1].startswith("consumer: stopped after batch ")


def test_missing_topic_and_unreachable_broker_are_one_line(kafka_bootstrap: str, tmp_path: Path) -> None:
    missing = run_consumer(*consumer_args(kafka_bootstrap, "no-such-topic", tmp_path, "--available-now"))
    assert missing.returncode == 1
    assert (
        f"consumer.py: error: topic 'no-such-topic' not found on {kafka_bootstrap} "
        "(scripts/kafka-local start creates it)"
    ) in printed_lines(missing)

    address = f"127.0.0.1:{free_port()}"
    down = run_consumer(*consumer_args(address, "ventas-events", tmp_path, "--connect-timeout", "2"))
    assert down.returncode == 1
    assert any(
        line.startswith(f"consumer.py: error: no Kafka broker reachable at {address} after ")
        for line in printed_lines(down)
    )


def test_unusable_checkpoint_location_is_a_usage_error(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    result = run_consumer(
        "--bootstrap-servers",
        kafka_bootstrap,
        "--topic",
        topic,
        "--available-now",
        "--checkpoint-location",
        str(a_file / "checkpoint"),
    )
    assert result.returncode == 2
    assert f"consumer.py: error: --checkpoint-location {a_file}/checkpoint: Not a directory" in printed_lines(result)


def test_without_the_connector_it_says_which_package_to_add(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    import sys

    from ventas.jars import spark_kafka_package
    from ventas.lab.processes import ROOT

    result = subprocess.run(  # spark-submit without --packages, the way a user meets it
        [
            str(Path(sys.executable).parent / "spark-submit"),
            str(ROOT / "consumer.py"),
            *consumer_args(kafka_bootstrap, topic, tmp_path, "--available-now"),
        ],
        capture_output=True,
        text=True,
        env=pipeline_env(),
        timeout=300,
    )
    assert result.returncode == 1
    assert (
        "consumer.py: error: the Spark Kafka connector is not on the classpath: run with "
        f"spark-submit --packages {spark_kafka_package()} consumer.py"
    ) in printed_lines(result)


def test_a_local_checkpoint_is_written_through_the_file_system_api(spark) -> None:
    """The class named exists in this Spark line (4.1 moved it)."""
    from consumer import create_session
    from ventas.checkpoint import FILE_MANAGER as CHECKPOINT_FILE_MANAGER

    spark.conf.unset(CHECKPOINT_FILE_MANAGER)
    assert create_session().conf.get(CHECKPOINT_FILE_MANAGER, None) is None  # remote storage keeps Spark's choice
    chosen = create_session(local_checkpoint=True).conf.get(CHECKPOINT_FILE_MANAGER)
    assert chosen.endswith(".FileSystemBasedCheckpointFileManager")
    assert spark.sparkContext._jvm.java.lang.Class.forName(chosen)
    spark.conf.unset(CHECKPOINT_FILE_MANAGER)

"""Where the producer works around kafka-python's bugs, each with the version that fixes it (none yet)
and the test that shows it is still needed. Both reach into kafka-python's private API, which those
tests pin."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kafka import KafkaProducer


def abandon(producer: KafkaProducer) -> None:
    """Close a producer that still holds records no broker will acknowledge. kafka-python's
    close(timeout) flushes first and raises when that times out (2.3 and 3.0.12 alike), so its sender
    thread is force-closed first, failing what it holds. Needed while tests/test_stops.py
    (test_a_second_signal_stops_a_producer_waiting_for_a_dead_broker) fails without it."""
    producer._sender.force_close()
    producer._sender.join(5)
    producer.close(timeout=0)


def renew_producer_id_after_reset(producer: KafkaProducer) -> None:
    """Make an idempotent producer ask for a new producer id whenever kafka-python drops its own.

    When a batch it had sent expires (a broker away longer than the delivery timeout), kafka-python
    3.0.0 to 3.0.12 drops the producer id but leaves its transaction manager READY, and its sender asks
    for a new id only from UNINITIALIZED: it then sends and expires nothing, for good. The Java client
    goes back to UNINITIALIZED (KAFKA-7737); so does this. Not fixed as of 3.0.12 (regressed in
    dpkp/kafka-python#2928). Needed while tests/test_producer.py
    (test_orders_sent_after_an_outage_longer_than_the_delivery_timeout_are_acknowledged) fails without it."""
    from kafka.producer.transaction_manager import TransactionState

    manager = producer._transaction_manager
    if manager is None or manager.is_transactional():
        return
    reset = manager.reset_producer_id

    def reset_producer_id() -> None:
        with manager._lock:  # reentrant: the reset takes it too
            reset()
            manager._current_state = TransactionState.UNINITIALIZED

    manager.reset_producer_id = reset_producer_id

"""The consumer's look at its topic before Spark starts: Spark's Kafka source would retry for minutes
where a user wants one line now."""

from __future__ import annotations

from ventas.config import UserError, first_line
from ventas.outages import Unavailable
from ventas.security import BrokerUnreachable, KafkaSecurity, connect


def latest_offsets(
    bootstrap_servers: str, topic: str, timeout_s: float, security: KafkaSecurity
) -> dict[int, int] | None:
    """The topic's latest offset per partition; UserError, in one line, when the broker is unreachable
    or the topic missing. None when kafka-python is not installed on the driver (nothing checked)."""
    try:
        from kafka import KafkaConsumer, TopicPartition
    except ImportError:
        return None
    timeout_ms = int(timeout_s * 1000)
    client = connect(
        KafkaConsumer, bootstrap_servers, security, timeout_s, request_timeout_ms=max(timeout_ms, 1000) + 1
    )
    try:
        if topic not in client.topics():
            if security.uses_sasl:  # Kafka does not tell a missing topic from one the user may not see
                raise UserError(
                    f"topic {topic!r} not found on {bootstrap_servers}, or user {security.username!r} "
                    f"is not authorized to use topic {topic!r}"
                )
            raise UserError(f"topic {topic!r} not found on {bootstrap_servers} (scripts/kafka-local start creates it)")
        partitions = [TopicPartition(topic, p) for p in client.partitions_for_topic(topic) or ()]
        return {tp.partition: end for tp, end in client.end_offsets(partitions).items()}
    finally:
        client.close()


PROBE_TIMEOUT_S = 3.0  # short: a stop during a wait for the broker must not wait for the probe


def probe_topic(bootstrap_servers: str, topic: str, security: KafkaSecurity) -> None:
    """Raise Unavailable, with the reason, while the topic's brokers cannot be reached."""
    try:
        latest_offsets(bootstrap_servers, topic, PROBE_TIMEOUT_S, security)
    except BrokerUnreachable as error:
        raise Unavailable(error.reason) from None
    except UserError as error:
        raise Unavailable(str(error)) from None
    except Exception as error:  # kafka-python's own, from a broker that answers half-way
        raise Unavailable(first_line(error)) from None

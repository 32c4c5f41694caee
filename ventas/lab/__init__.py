"""The local lab: the servers that demos, tests and benchmarks start on this machine (Kafka broker or
cluster, Spark standalone cluster, PostgreSQL), the pipeline's processes started and stopped by PID,
and `make demo`. The pipeline (producer.py, consumer.py, the rest of ventas/) never imports it."""

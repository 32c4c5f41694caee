"""`make bench` (python -m bench.run) and its tools: the seed's naive consumer and the batch ceiling,
which spark-submit runs as files, and progress_breakdown, a query's batch time read from an event log."""

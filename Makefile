# The README's two commands: `make demo` runs the whole pipeline, `make test` the test suite.
# Both create .venv, install the pinned requirements and fetch the JVM jars once (cached in ~).

PYTHON ?= python3
# The default stack is the Spark 4.1 line; the seed's 3.5 line has an environment of its own:
# `make test SPARK_LINE=3.5` (and `make demo SPARK_LINE=3.5`).
SPARK_LINE ?= 4.1
ifeq ($(SPARK_LINE),4.1)
VENV ?= .venv
else ifeq ($(SPARK_LINE),3.5)
VENV ?= .venv-spark3.5
LINE_PINS := requirements-spark3.5.txt
else
$(error SPARK_LINE is 4.1 (default) or 3.5)
endif
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# What `make test` also runs on the 3.5 line: the tests through a real broker and spark-submit, with
# the consumers' quarantine off (KEEP_REJECTED=false), so that their rejects are counted both ways.
SEED_LINE_TESTS := tests/test_consumer.py tests/test_faults.py tests/test_secure.py tests/test_totals_database.py tests/test_windows.py
# The 3.5 line's environment, whatever PYTHON and VENV the default line was given (its NumPy 1 has no
# wheel for Python 3.13).
SEED_LINE := $(MAKE) SPARK_LINE=3.5 VENV=.venv-spark3.5 PYTHON=python3
# Tests run in this many processes (pytest-xdist; 0 runs them in pytest's own). Each test has its own
# ports and directories, and each process its own broker and SparkSession.
TEST_WORKERS ?= 2

.PHONY: demo demo-cluster test compose-test lint deps bench clean

# Quiet (@): the demo's own first lines are the broker's and the dashboard's addresses.
demo: deps
	@$(PY) -m ventas.lab.demo

# The same on clusters: 3 Kafka nodes, a Spark standalone master with 2 workers (ventas/lab/demo.py --cluster).
demo-cluster: deps
	@$(PY) -m ventas.lab.demo --cluster

test: deps
ifeq ($(SPARK_LINE)$(PYTEST_ARGS),4.1)
	$(SEED_LINE) deps
endif
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)
ifeq ($(SPARK_LINE)$(PYTEST_ARGS),4.1)
	KEEP_REJECTED=false $(SEED_LINE) test PYTEST_ARGS="$(SEED_LINE_TESTS)"
endif

# docker-compose.yml run for real, on a Docker engine of its own with local stand-ins for the upstream
# images (docs/compose.md). `make test` runs it too: it is one of the suite's tests.
compose-test: deps
	$(PY) -m pytest tests/test_compose_up.py

# Measures the 3.5 line's consumer beside the default's.
bench: deps
	$(SEED_LINE) deps
	$(PY) -m bench.run

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

deps: $(STAMP)
	@$(PY) -m ventas.jars

# requirements.txt and requirements-dev.txt, with the pins of the Spark line's own file in place of theirs.
# After `source .venv/bin/activate`, Spark logs quietly through conf/log4j2.properties.
$(STAMP): requirements.txt requirements-spark3.5.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	sed -n 's/^\([A-Za-z0-9_.-]*==\).*/\1/p' /dev/null $(LINE_PINS) > $(VENV)/replaced-pins
	grep -hvF -f $(VENV)/replaced-pins requirements.txt requirements-dev.txt | cat - $(LINE_PINS) > $(VENV)/requirements.txt
	$(PY) -m pip install --quiet -r $(VENV)/requirements.txt
	grep -q SPARK_CONF_DIR $(VENV)/bin/activate || \
		echo 'export SPARK_CONF_DIR="$(CURDIR)/conf"' >> $(VENV)/bin/activate
	touch $(STAMP)

clean:
	-scripts/kafka-local stop
	-scripts/kafka-local stop --brokers 3
	-scripts/spark-local stop
	-scripts/postgres-local stop
	rm -rf .venv .venv-spark3.5 .pytest_cache .ruff_cache .hypothesis

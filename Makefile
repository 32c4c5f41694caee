# The README's two commands: `make demo` runs the whole pipeline, `make test` the test suite.
# Both create .venv, install the pinned requirements and fetch the JVM jars once (cached in ~).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint deps bench clean

demo: deps
	$(PY) scripts/demo.py

test: deps
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest $(PYTEST_ARGS)

bench: deps
	$(PY) bench/run.py

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

deps: $(STAMP)
	$(PY) -m ventas.jars

# After `source .venv/bin/activate`, Spark logs quietly through conf/log4j2.properties.
$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	grep -q SPARK_CONF_DIR $(VENV)/bin/activate || \
		echo 'export SPARK_CONF_DIR="$(CURDIR)/conf"' >> $(VENV)/bin/activate
	touch $(STAMP)

clean:
	-scripts/kafka-local stop
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis

# The project's Python side (producer and spark-submit driver): slim, pinned, non-root.
# PYTHON_IMAGE: another image of the same Python (the compose test's local one, docs/compose.md).
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm
FROM ${PYTHON_IMAGE}

# spark-submit needs a JVM; procps gives Spark's scripts `ps`.
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps \
    && rm -rf /var/lib/apt/lists/*

# uid 185 is the `spark` user of the official Spark image, so both can write the shared volume.
RUN useradd --uid 185 --create-home app \
    && mkdir -p /opt/spark/work-dir \
    && chown app /opt/spark/work-dir

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

# The Kafka connector that compose's `spark-submit --packages` names, resolved into the image's Ivy
# cache at build time: the consumer starts without reaching Maven Central.
USER app
ARG KAFKA_CONNECTOR=org.apache.spark:spark-sql-kafka-0-10_2.13:4.1.1
RUN echo > /tmp/resolve.py \
    && spark-submit --packages "$KAFKA_CONNECTOR" /tmp/resolve.py > /tmp/resolve.log 2>&1 \
    || { cat /tmp/resolve.log; exit 1; }

COPY schemas.py producer.py consumer.py ./
COPY ventas/ ventas/
COPY conf/ conf/

ENV PYTHONUNBUFFERED=1 \
    SPARK_CONF_DIR=/app/conf \
    PYSPARK_PYTHON=python3
CMD ["python", "producer.py"]

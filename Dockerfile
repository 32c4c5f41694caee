# The project's Python side (producer and spark-submit driver): slim, pinned, non-root.
FROM python:3.11.7-slim-bookworm

# spark-submit needs a JVM; procps gives Spark's scripts `ps`.
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps \
    && rm -rf /var/lib/apt/lists/*

# uid 185 is the `spark` user of the official Spark image, so both can write the shared volume.
RUN useradd --uid 185 --create-home app \
    && mkdir -p /opt/spark/work-dir /home/app/.ivy2 \
    && chown app /opt/spark/work-dir /home/app/.ivy2

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY schemas.py producer.py consumer.py ./
COPY ventas/ ventas/
COPY conf/ conf/

USER app
ENV PYTHONUNBUFFERED=1 \
    SPARK_CONF_DIR=/app/conf \
    PYSPARK_PYTHON=python3
CMD ["python", "producer.py"]

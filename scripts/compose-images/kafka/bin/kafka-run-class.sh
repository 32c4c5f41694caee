#!/bin/bash
# java with Kafka's classpath, as the distribution's script; the tools log warnings only, to stderr.
exec java ${KAFKA_HEAP_OPTS:--Xmx256M} -Djava.awt.headless=true \
  -Dlog4j2.configurationFile="${KAFKA_LOG4J_CONFIG:-/opt/kafka/bin/tools-log4j2.properties}" \
  -cp '/opt/kafka/libs/*' "$@"

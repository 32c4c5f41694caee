"""What producer.py and consumer.py run: configuration, orders, the table, security, checkpoints, the
dashboard, the totals database and the Spark Kafka connector's jars. ventas.lab: the local servers."""

"""Helpers shared by producer.py, consumer.py and scripts/ (configuration, local broker, jars)."""

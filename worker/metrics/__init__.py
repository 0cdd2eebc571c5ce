"""Prometheus metrics: worker-side instruments (``instruments``) and per-tenant gauges read from Redis."""

"""Metrics (Prometheus) and traces (OpenTelemetry) for the gateway."""

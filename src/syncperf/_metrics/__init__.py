"""syncperf's metrics engine: in-process aggregates exported as OpenTelemetry data."""

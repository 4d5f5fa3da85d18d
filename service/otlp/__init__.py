"""The OpenTelemetry metrics receiver: OTLP/HTTP exports become usage events."""

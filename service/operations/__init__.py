"""Running the service: /metrics, request ids and access logs, rate limiting."""

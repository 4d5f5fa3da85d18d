"""Multi-tenant metering and billing service."""

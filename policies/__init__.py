"""Interpreters of the declarative config: auth methods, feature gates, CORS, rate limits, validation."""

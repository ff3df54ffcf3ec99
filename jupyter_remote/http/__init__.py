"""Talking HTTP: the one synchronous client, the NDJSON/record relay and the one tornado handler base."""

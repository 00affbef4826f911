"""Backend conformance suites (one per interface, subclassed per backend)."""

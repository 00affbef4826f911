"""Benchmarks that run the same code paths as the pipeline and report JSON."""

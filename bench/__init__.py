"""Benchmarks: `make bench` (python -m bench). Every figure is printed against a reference from the same run."""

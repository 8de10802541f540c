"""Benchmarks: each compares side by side in one run and writes results/<name>.json."""

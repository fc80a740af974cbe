"""Throughput, latency, overload and master benchmarks on the local services: ``make bench``."""

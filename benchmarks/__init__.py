"""Benchmarks: one module per block, run by ``blocks bench <block>``; see harness.py."""

"""Shared machinery for every block: hashing, codec, clocks, errors, log, transport, server,
HTTP request heads."""

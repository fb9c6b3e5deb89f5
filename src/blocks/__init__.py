"""blocks: distributed-systems building blocks you can import, read and test.

Each block (``blocks.kv``, ``blocks.cache``, ...) has an interface, in-process and cluster
implementations, a Hypothesis contract and a benchmark. ``blocks.core`` holds the shared
machinery: hashing, codec, clocks, errors, the segment log, transports and the server.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]

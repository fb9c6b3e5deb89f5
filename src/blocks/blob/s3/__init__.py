"""The HTTP side of the blob store: the S3 API a ``BlobServer`` serves.

The request path, outermost first: ``http`` (the HTTP/1.1 server core, which also carries the
nodes' shard protocol, ``blocks.blob.cluster.peers``), ``sigv4``/``sigv2`` (authentication),
``ops`` (which operation a request names), ``handler`` (``S3Handler``: route to the store),
``objects``/``buckets``/``copy`` (the operations), ``headers``/``xml``/``docs`` (replies),
``access``, ``checksums``, ``awschunked``, ``streaming``, and the server's own ``workers``
and ``allocator``. Nothing in ``blocks.blob.storage`` imports this package. Import its modules
directly; this package imports nothing.
"""

"""One node's storage under ``LocalBlobStore``: shards, chunks, metadata and its journal.

Bytes: ``shards`` (where shards live) < ``erasure`` (the codecs) < ``chunks`` (a chunk as k+m
shards) < ``pipeline`` (a stream as chunks), with ``durable`` (flushes before the commit).
Metadata: ``meta`` (values) < ``records`` (journal records) < ``index`` (the in-memory index)
< ``journal`` and ``committing`` (the durable order), with ``ledger`` (chunk reference counts),
``versions`` (record versions and the hybrid clock) and the store's parts ``buckets``,
``multipart`` and ``versioned``. It imports neither ``blocks.blob.s3`` nor
``blocks.blob.cluster``. Import its modules directly; this package imports nothing.
"""

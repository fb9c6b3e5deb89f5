"""Blob nodes together: the shard protocol between them, replicated metadata, collection.

``peers`` (shards on other nodes, over ``blocks.blob.s3.http``), ``replica`` and
``replica_peers`` (``ReplicatedBlobStore``: each node's full copy of the metadata),
``replication`` (pushes, syncs, repair and collection rounds), ``gc`` (cluster-wide chunk
collection) and ``node`` (assembling one node of a cluster). Import its modules directly;
this package imports nothing.
"""

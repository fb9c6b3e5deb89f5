"""The Bitcask engine: a durable, embedded, log-structured hash table for one process.

``Bitcask`` (``bitcask.py``) is the store; around it: the record and hint formats
(``format.py``), file names and listings (``files.py``), a memory-mapped data file
(``datafile.py``), the shared fsync (``group_commit.py``), opening and repair
(``recovery.py``) and merge (``compaction.py``). It knows nothing of the cluster: the cluster
keeps its replicas in one (``blocks.kv.cluster.persist``), and ``blocks.kv`` exports the
names below.
"""

from blocks.kv.engine.bitcask import Bitcask, BitcaskStats, SyncPolicy
from blocks.kv.engine.recovery import RecoveryReport

__all__ = ["Bitcask", "BitcaskStats", "RecoveryReport", "SyncPolicy"]

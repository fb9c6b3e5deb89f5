"""History checkers: pure functions from what clients saw to a verdict with evidence.

Record events with ``blocks.testing.history.History`` (invoke, then ok / fail / info), pair
them with ``pair_operations``, and hand the operations to the checker of the block:

* every block: ``check_unique_values`` (nothing acknowledged lost, nothing read never written);
* kv registers: ``check_register_histories`` (per-key linearizability, WGL search);
* pub-sub: ``check_history`` (per-partition order, nothing lost, no duplicates);
* queue: ``check_queue_history`` (nothing acknowledged lost, redelivery only after the
  visibility timeout);
* blob: ``check_object_history`` (byte-identical objects, the right final value);
* sequencer: ``check_unique_ids`` (unique IDs, increasing per generator);
* counters: ``check_counter_convergence`` (replicas converge to the acknowledged sum).

Each returns a frozen result with ``valid`` and ``describe()``; none does I/O.
"""

from blocks.testing.checkers.counters import CounterCheck, check_counter_convergence
from blocks.testing.checkers.linearizability import (
    STEPS_MAX,
    KeyVerdict,
    LinearizabilityReport,
    Model,
    RegisterModel,
    check_linearizable,
    check_register_histories,
)
from blocks.testing.checkers.objects import ObjectCheck, check_object_history
from blocks.testing.checkers.operations import InvalidHistory, Operation, Status, pair_operations
from blocks.testing.checkers.pubsub import CheckResult, Commit, Poll, Send, check_history
from blocks.testing.checkers.queue import (
    Deletion,
    Delivery,
    QueueCheck,
    QueueSend,
    Release,
    check_queue_history,
)
from blocks.testing.checkers.sequences import IdCheck, check_unique_ids
from blocks.testing.history import UniqueValuesCheck, check_unique_values

__all__ = [
    "STEPS_MAX",
    "CheckResult",
    "Commit",
    "CounterCheck",
    "Deletion",
    "Delivery",
    "IdCheck",
    "InvalidHistory",
    "KeyVerdict",
    "LinearizabilityReport",
    "Model",
    "ObjectCheck",
    "Operation",
    "Poll",
    "QueueCheck",
    "QueueSend",
    "RegisterModel",
    "Release",
    "Send",
    "Status",
    "UniqueValuesCheck",
    "check_counter_convergence",
    "check_history",
    "check_linearizable",
    "check_object_history",
    "check_queue_history",
    "check_register_histories",
    "check_unique_ids",
    "check_unique_values",
    "pair_operations",
]

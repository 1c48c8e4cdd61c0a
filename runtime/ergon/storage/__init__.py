"""The interface for store implementers: the protocols a store implements and the records it
keeps. Importing it loads no driver (the adapters are imported on their own).

A store is an object with the methods of `Store`: `ExecutionStore` (what an executor uses to run
one flow), `QueueStore` (what a worker adds: claims, leases, wake-ups) and `AdminStore` (what
clients, the scheduler, the CLI and the operator use), plus `close` and `async with`. A client
that needs only one part asks for that protocol, so a partial store can serve it.

Records (frozen dataclasses; payloads are JSON text, times timezone-aware UTC):

* `NewFlow` -- a flow to record; `FlowStatus` -- a flow as recorded; `FlowEnd` -- how an
  execution leaves a flow; `OpenedFlow` -- what an executor starts from.
* `StepRecord` -- one checkpoint; `SignalRecord` -- a queued signal.
* `Lease`, `Claimed`, `Renewal` -- a worker's hold on flows.
* `QueueDepth` -- a version's unfinished flows by what they wait for (`queue_depth`).
* `Notifier` -- the change counter a store bumps when others' writes may matter.

How to write one: keep the state rules of `ergon.storage.transitions` (pure functions a store
in Python calls; a store in SQL or a script mirrors them, as the Postgres and Redis stores do),
map rows with `ergon.storage.rows`, and run the conformance suite in tests/stores against it --
it checks every row of the state table in docs/architecture.md. The adapters shipped here:
`ergon.storage.memory`, `ergon.storage.sqlite`, `ergon.storage.postgres`, `ergon.storage.redis`;
`ergon.storage.urls.open_store` picks one from a URL.
"""

from ergon.core.records import (
    FLOW_STATES,
    TERMINAL_STATES,
    FlowEnd,
    FlowState,
    FlowStatus,
    Lease,
    NewFlow,
    OpenedFlow,
    QueueDepth,
    SignalRecord,
    StepKind,
    StepRecord,
    StepState,
)
from ergon.core.store import (
    AdminStore,
    Claimed,
    ExecutionStore,
    FlowRecords,
    Notifier,
    QueueStore,
    Renewal,
    Store,
)

__all__ = [
    "FLOW_STATES",
    "TERMINAL_STATES",
    "AdminStore",
    "Claimed",
    "ExecutionStore",
    "FlowEnd",
    "FlowRecords",
    "FlowState",
    "FlowStatus",
    "Lease",
    "NewFlow",
    "Notifier",
    "OpenedFlow",
    "QueueDepth",
    "QueueStore",
    "Renewal",
    "SignalRecord",
    "StepKind",
    "StepRecord",
    "StepState",
    "Store",
]

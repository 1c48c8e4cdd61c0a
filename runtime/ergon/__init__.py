"""Ergon: durable execution for Python.

Write flows as async classes; every step is checkpointed so a crash resumes where it stopped.

    import ergon

    class Order(ergon.Flow):
        order_id: str

        @ergon.flow
        async def run(self) -> str:
            return await self.charge()

        @ergon.step(retry=ergon.RetryPolicy.STANDARD)
        async def charge(self) -> str:
            return f"charged {self.order_id}"

This module is the contract: every public name is here, in `__all__`, grouped by concern.
The modules under `ergon.core`, `ergon.distributed` and `ergon.cli` are internal and change
without notice; store implementers import `ergon.storage`.
"""

import importlib
from typing import TYPE_CHECKING, Any

from ergon.core.children import child_flow_id, invoke
from ergon.core.context import StepInfo, current_step
from ergon.core.dag import Dag, StepHandle, dag
from ergon.core.definition import flow
from ergon.core.errors import (
    ChildFlowError,
    ErgonError,
    ErrorInfo,
    ExitCode,
    FailureCode,
    FlowCancelledError,
    FlowContextError,
    FlowDefinitionError,
    FlowError,
    FlowFailed,
    FlowFailedError,
    FlowInputError,
    FlowLoadError,
    FlowMismatchError,
    FlowNotFoundError,
    IdentifierError,
    LeaseLost,
    LeaseLostError,
    NonDeterminismError,
    SignalPayloadError,
    SignalTimeout,
    SignalTimeoutError,
    StepError,
    StoreError,
    StoreUrlError,
    StoreValueError,
)
from ergon.core.executor import Executor
from ergon.core.flow import Flow, load_flow
from ergon.core.outcomes import Cancelled, Completed, Failed, Outcome, Suspended
from ergon.core.records import FlowState, FlowStatus, QueueDepth, StepRecord, SuspendReason
from ergon.core.redaction import RedactingFormatter, redact, redact_url
from ergon.core.retry import Retryable, RetryPolicy
from ergon.core.signals import wait_for_signal
from ergon.core.step import step
from ergon.core.store import Store
from ergon.core.timers import sleep
from ergon.distributed.client import Client
from ergon.distributed.runner import run
from ergon.distributed.scheduler import Scheduler
from ergon.distributed.worker import Worker, WorkerHandle
from ergon.storage.memory import MemoryStore
from ergon.storage.sqlite import SqliteStore
from ergon.storage.urls import open_store

if TYPE_CHECKING:
    from ergon.storage.postgres import PostgresStore
    from ergon.storage.redis import RedisStore

__version__ = "0.1.0"

_OPTIONAL = {
    "PostgresStore": ("ergon.storage.postgres", "postgres"),
    "RedisStore": ("ergon.storage.redis", "redis"),
}


def __getattr__(name: str) -> Any:
    """`ergon.PostgresStore` and `ergon.RedisStore` load on first use, so that `import ergon`
    does not need their drivers (the `postgres` and `redis` extras)."""
    if name in _OPTIONAL:
        module, extra = _OPTIONAL[name]
        try:
            return getattr(importlib.import_module(module), name)
        except ImportError as exc:
            raise ImportError(f"ergon.{name} needs: pip install 'ergon[{extra}]' ({exc})") from exc
    raise AttributeError(f"module 'ergon' has no attribute {name!r}")


__all__ = [  # noqa: RUF022 - grouped by concern, not sorted
    # Flows and steps
    "Flow",
    "flow",
    "step",
    "RetryPolicy",
    "Retryable",
    "current_step",
    "StepInfo",
    "load_flow",
    # Durable operations, called in a flow body
    "sleep",
    "wait_for_signal",
    "invoke",
    "child_flow_id",
    "dag",
    "Dag",
    "StepHandle",
    # Running flows
    "Executor",
    "run",
    "Worker",
    "WorkerHandle",
    "Scheduler",
    "Client",
    # Stores
    "Store",
    "open_store",
    "MemoryStore",
    "SqliteStore",
    "PostgresStore",
    "RedisStore",
    # Outcomes and records
    "Outcome",
    "Completed",
    "Failed",
    "Suspended",
    "Cancelled",
    "SuspendReason",
    "ErrorInfo",
    "FlowStatus",
    "FlowState",
    "StepRecord",
    "QueueDepth",
    # Errors (the hierarchy is drawn in the docstring of ergon.core.errors)
    "ErgonError",
    "FlowDefinitionError",
    "FlowContextError",
    "FlowNotFoundError",
    "FlowInputError",
    "FlowMismatchError",
    "FlowLoadError",
    "IdentifierError",
    "StoreError",
    "StoreValueError",
    "StoreUrlError",
    "StepError",
    "NonDeterminismError",
    "SignalPayloadError",
    "SignalTimeoutError",
    "ChildFlowError",
    "FlowFailedError",
    "FlowCancelledError",
    "LeaseLostError",
    # Codes shared by the worker, the CLI and the operator
    "FailureCode",
    "ExitCode",
    # Keeping secrets out of output: store URLs and driver errors carry passwords
    "redact",
    "redact_url",
    "RedactingFormatter",
    # Deprecated aliases, kept for one release
    "FlowError",  # ErrorInfo
    "FlowFailed",  # FlowFailedError
    "LeaseLost",  # LeaseLostError
    "SignalTimeout",  # SignalTimeoutError
]

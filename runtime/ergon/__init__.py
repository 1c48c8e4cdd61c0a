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
"""

import importlib
from typing import TYPE_CHECKING, Any

from ergon.core.children import child_flow_id
from ergon.core.context import StepInfo, current_step
from ergon.core.dag import Dag, StepHandle, dag
from ergon.core.errors import (
    ChildFlowError,
    ErgonError,
    FlowCancelledError,
    FlowContextError,
    FlowDefinitionError,
    FlowError,
    FlowFailed,
    FlowInputError,
    FlowLoadError,
    FlowMismatchError,
    FlowNotFoundError,
    IdentifierError,
    LeaseLost,
    NonDeterminismError,
    SignalPayloadError,
    SignalTimeout,
    StepError,
    StoreError,
    StoreUrlError,
    StoreValueError,
)
from ergon.core.executor import Executor
from ergon.core.flow import Flow, flow, load_flow
from ergon.core.outcomes import Cancelled, Completed, Failed, Outcome, Suspended, SuspendReason
from ergon.core.records import FlowStatus, StepRecord
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


__all__ = [
    "Cancelled",
    "ChildFlowError",
    "Client",
    "Completed",
    "Dag",
    "ErgonError",
    "Executor",
    "Failed",
    "Flow",
    "FlowCancelledError",
    "FlowContextError",
    "FlowDefinitionError",
    "FlowError",
    "FlowFailed",
    "FlowInputError",
    "FlowLoadError",
    "FlowMismatchError",
    "FlowNotFoundError",
    "FlowStatus",
    "IdentifierError",
    "LeaseLost",
    "MemoryStore",
    "NonDeterminismError",
    "Outcome",
    "PostgresStore",
    "RedisStore",
    "RetryPolicy",
    "Retryable",
    "Scheduler",
    "SignalPayloadError",
    "SignalTimeout",
    "SqliteStore",
    "StepError",
    "StepHandle",
    "StepInfo",
    "StepRecord",
    "Store",
    "StoreError",
    "StoreUrlError",
    "StoreValueError",
    "SuspendReason",
    "Suspended",
    "Worker",
    "WorkerHandle",
    "child_flow_id",
    "current_step",
    "dag",
    "flow",
    "load_flow",
    "open_store",
    "run",
    "sleep",
    "step",
    "wait_for_signal",
]

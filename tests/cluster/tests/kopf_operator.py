"""A small kopf operator for the test cluster's tests (run with ``kopf run --standalone``).

It reacts to Widgets (the demo chart's CRD): marks them Ready with their size in status
(and says so in an Event),
follows size changes, and on deletion records the fact in ``$WIDGET_RECORD_DIR`` before kopf
removes its finalizer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import kopf

GROUP, VERSION, PLURAL = "demo.example.com", "v1", "widgets"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = "demo.example.com/cleanup"
    settings.watching.server_timeout = 30


@kopf.on.create(GROUP, VERSION, PLURAL)
def created(body: kopf.Body, spec: kopf.Spec, patch: kopf.Patch, **_: Any) -> None:
    kopf.info(body, reason="Ready", message=f"widget of size {spec.get('size')} is ready")
    patch.status["phase"] = "Ready"
    patch.status["size"] = spec.get("size")


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec.size")
def resized(new: Any, patch: kopf.Patch, **_: Any) -> None:
    patch.status["size"] = new


@kopf.on.delete(GROUP, VERSION, PLURAL)
def deleted(name: str, namespace: str | None, **_: Any) -> None:
    Path(os.environ["WIDGET_RECORD_DIR"], f"{namespace}.{name}.deleted").write_text("bye\n")

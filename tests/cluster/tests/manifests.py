"""Manifests shared by the tests: a CRD shaped like Ergon's FlowRun, and small helpers."""

from __future__ import annotations

import json
from typing import Any

import yaml

FLOWRUN_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: flowruns.ergon.dev
spec:
  group: ergon.dev
  scope: Namespaced
  names:
    plural: flowruns
    singular: flowrun
    kind: FlowRun
    shortNames: [fr]
    categories: [ergon]
  versions:
    - name: v1alpha1
      served: true
      storage: true
      subresources:
        status: {}
        scale: {specReplicasPath: .spec.parallelism, statusReplicasPath: .status.running}
      additionalPrinterColumns:
        - {name: Flow, type: string, jsonPath: .spec.flow}
        - {name: Phase, type: string, jsonPath: .status.phase}
        - {name: Attempts, type: integer, jsonPath: .status.attempts}
        - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [flow, input]
              properties:
                flow:
                  type: string
                  minLength: 1
                  x-kubernetes-validations:
                    - {rule: "self == oldSelf", message: "flow is immutable"}
                input:
                  type: object
                  x-kubernetes-preserve-unknown-fields: true
                  x-kubernetes-validations:
                    - {rule: "self == oldSelf", message: "input is immutable"}
                retry:
                  type: object
                  default: {}
                  properties:
                    maxAttempts: {type: integer, minimum: 1, default: 3}
                    backoffSeconds: {type: integer, default: 10}
                cancel: {type: boolean}
                parallelism: {type: integer}
                phaseHint: {type: string, enum: [Fast, Slow]}
            status:
              type: object
              x-kubernetes-preserve-unknown-fields: true
"""


def flowrun(name: str, flow: str = "examples.orders:OrderFlow", **spec: Any) -> str:
    body = {
        "apiVersion": "ergon.dev/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": name},
        "spec": {"flow": flow, "input": {"order_id": "42"}, **spec},
    }
    return yaml.safe_dump(body)


def pod(
    name: str,
    script: str,
    *,
    restart: str = "Never",
    grace: int | None = None,
    env: list[dict[str, Any]] | None = None,
    labels: dict[str, str] | None = None,
) -> str:
    """A pod whose container runs ``script`` with the test interpreter's ``sh``."""
    spec: dict[str, Any] = {
        "restartPolicy": restart,
        "containers": [
            {
                "name": "main",
                "image": "local/none:1",
                "command": ["sh", "-c", script],
                "env": env or [],
            }
        ],
    }
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    metadata: dict[str, Any] = {"name": name, "labels": labels or {}}
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})

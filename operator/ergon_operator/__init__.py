"""The Ergon operator: `FlowRun` and `Signal` resources run as durable flows in worker pods.

Layers inside: `resources`, `pods`, `status`, `decisions` and `signals` are pure functions from
what the operator observes (a FlowRun, its pods, its flow record) to what it should do;
`kube` and `reconciler` carry those decisions out; `handlers` wires them to kopf.
"""

__version__ = "0.1.0"

"""Admission checks a real API server makes on create that tests depend on.

Only the ServiceAccount admission plugin for now: kube-apiserver refuses a Pod whose
`spec.serviceAccountName` names an account that does not exist in its namespace (403
Forbidden, "error looking up service account ..."). Operators must surface that rejection, so
the test cluster has to produce it rather than run the pod anyway. (ValidatingAdmissionPolicies
are ``admission_policy.py``'s.)
"""

from __future__ import annotations

from typing import Any

from .errors import forbidden
from .store import Store

JSON = dict[str, Any]


def admit_pod(store: Store, namespace: str, pod: JSON) -> None:
    """Raise 403 when the Pod's ServiceAccount is missing (the `default` one always exists)."""
    spec = pod.get("spec") or {}
    account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    if account == "default" or store.get("serviceaccounts", namespace, account) is not None:
        return
    name = str((pod.get("metadata") or {}).get("name") or "")
    raise forbidden(
        "pods",
        name,
        "",
        f"error looking up service account {namespace}/{account}: "
        f'serviceaccount "{account}" not found',
    )

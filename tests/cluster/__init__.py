"""A stand-in Kubernetes cluster for tests: an in-memory API server plus a process kubelet.

Run it with ``python -m tests.cluster --kubeconfig PATH``; use it from tests through
``tests.cluster.fixtures``. README.md lists what it implements and where it differs from a real
cluster. Modules, from the wire inwards:

- ``__main__`` (CLI), ``server`` (routing, fixed endpoints, errors), ``authn`` (bearer tokens
  to users), ``requestlog`` (request counts and the audit log), ``codec`` (request and
  response encoding), ``handlers`` (resource verbs, lists, watches), ``subresources`` (log,
  scale, eviction), ``discovery``, ``openapi``, ``tables``, ``protobuf`` (request bodies);
- ``cluster`` (wires one cluster together), ``registry`` (create/update/patch/delete semantics),
  ``strategies`` (per-kind rules of built-ins), ``crds``, ``structural`` (defaulting, pruning),
  ``validation`` and ``cel`` (CRD schemas and rules), ``admission`` and ``admission_policy``
  (ServiceAccount admission, ValidatingAdmissionPolicies), ``patching`` and ``apply`` (patch types,
  server-side apply), ``selectors``, ``events`` (core vs. events.k8s.io Events);
- ``store`` (objects, resourceVersions, watch fan-out), ``resources`` and ``builtins`` (served
  types), ``schemas`` (built-in OpenAPI definitions, schema walking), ``errors``;
- controllers: ``gc`` (owner references, namespace and CRD cleanup), ``kubelet`` with
  ``podenv``, ``podstatus``, ``podlogs`` and ``sandbox`` (a read-only root and volumes in a
  user namespace);
- ``tools`` (fetches kubectl and helm), ``fixtures`` (pytest).
"""

"""Running the real ``helm`` binary on the chart, and the paths of the Kubernetes packaging.

Also what a real install needs: :func:`helm_install_args` gives the arguments of a local
``helm install`` of ``helm/ergon`` (for the test cluster or kind), so a test does not have to
know the chart's values.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "helm" / "ergon"
CRDS_DIR = REPO_ROOT / "crds"
EXAMPLES_DIR = REPO_ROOT / "examples" / "k8s"

CRD_FILES = {
    "FlowRun": CRDS_DIR / "flowruns.ergon.dev.yaml",
    "Signal": CRDS_DIR / "signals.ergon.dev.yaml",
    "WorkerPool": CRDS_DIR / "workerpools.ergon.dev.yaml",
}

# Values for a render that passes the chart's store check; tests add their own on top.
DEPLOY_POSTGRES = {"postgres.deploy": True}
EXISTING_SECRET = {"postgres.existingSecret": "ergon-store"}


class HelmError(Exception):
    """helm exited non-zero; the message is its stderr."""


@functools.cache
def helm_binary() -> Path:
    """The helm binary: ``$HELM``, else the one tests/cluster/tools fetches, else ``PATH``."""
    if os.environ.get("HELM"):
        return Path(os.environ["HELM"])
    local = REPO_ROOT / ".tools" / "bin" / "helm"
    if local.is_file() and os.access(local, os.X_OK):
        return local
    try:
        from tests.cluster.tools import resolve_tools  # fetches kubectl and helm once
    except ImportError:
        found = shutil.which("helm")
        if found is None:
            raise RuntimeError(
                "helm not found: set $HELM, or run `python -m tests.cluster.tools`"
            ) from None
        return Path(found)
    return resolve_tools().helm


def run_helm(*args: str | Path) -> str:
    """Runs helm with ``args`` and returns its stdout; raises :class:`HelmError` on failure."""
    done = subprocess.run(
        [str(helm_binary()), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise HelmError(done.stderr.strip() or done.stdout.strip())
    return done.stdout


def value_args(values: Mapping[str, Any]) -> list[str]:
    """``--set-json`` arguments for ``values`` (dotted keys), so types survive exactly."""
    args: list[str] = []
    for key, value in values.items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    return args


def render(
    values: Mapping[str, Any],
    *,
    namespace: str = "ergon",
    release: str = "ergon",
    include_crds: bool = False,
) -> list[dict[str, Any]]:
    """The manifests ``helm template`` renders for ``values``, parsed."""
    key = json.dumps(values, sort_keys=True)
    return [dict(doc) for doc in _render_cached(key, namespace, release, include_crds)]


@functools.cache
def _render_cached(
    values_json: str, namespace: str, release: str, include_crds: bool
) -> tuple[dict[str, Any], ...]:
    args: list[str | Path] = ["template", release, CHART_DIR, "--namespace", namespace]
    if include_crds:
        args.append("--include-crds")
    out = run_helm(*args, *value_args(json.loads(values_json)))
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def render_error(values: Mapping[str, Any], *, namespace: str = "ergon") -> str:
    """helm's error message for a render of ``values`` that must fail."""
    try:
        run_helm("template", "ergon", CHART_DIR, "--namespace", namespace, *value_args(values))
    except HelmError as error:
        return str(error)
    raise AssertionError(f"helm template succeeded for {values!r}")


def find(
    docs: Sequence[dict[str, Any]], kind: str, name: str | None = None
) -> list[dict[str, Any]]:
    """Manifests of ``kind`` (and ``name``) among ``docs``."""
    return [
        doc
        for doc in docs
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
    ]


def one(docs: Sequence[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def load_crd(kind: str) -> dict[str, Any]:
    return dict(yaml.safe_load(CRD_FILES[kind].read_text()))


def helm_install_args(
    *,
    release: str = "ergon",
    namespace: str = "ergon",
    kubeconfig: str | Path | None = None,
    store_secret: str | None = "ergon-store",
    values: Mapping[str, Any] | None = None,
    wait: bool = False,
) -> list[str]:
    """Arguments (after the helm binary) of a ``helm install`` of the chart from this checkout.

    ``store_secret`` names a Secret holding the DSN under ``dsn`` (create it first, in
    ``namespace``); pass None and ``values={"postgres.deploy": True}`` for the bundled Postgres.
    ``values`` are dotted chart keys, e.g. ``{"image.tag": "dev", "operator.watchNamespace": "x"}``.
    """
    merged: dict[str, Any] = {}
    if store_secret is not None:
        merged["postgres.existingSecret"] = store_secret
    merged.update(values or {})
    args = ["install", release, str(CHART_DIR), "--namespace", namespace, "--create-namespace"]
    if kubeconfig is not None:
        args += ["--kubeconfig", str(kubeconfig)]
    if wait:
        args += ["--wait", "--timeout", "5m"]
    return args + value_args(merged)

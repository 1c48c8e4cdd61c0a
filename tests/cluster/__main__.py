"""``python -m tests.cluster --kubeconfig PATH``: serve a test cluster in the foreground.

Binds a free loopback port (or ``--port``), writes a kubeconfig pointing at it, prints
``ready <url>`` on stdout once requests can be served, and on SIGTERM/SIGINT stops every pod
process it started and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from .cluster import Cluster, ClusterConfig
from .server import build_app, kubeconfig


def _default_kubectl() -> Path:
    from .tools import DEFAULT_DEST

    return Path(os.environ.get("KUBECTL") or DEFAULT_DEST / "kubectl")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster", description=__doc__)
    parser.add_argument("--kubeconfig", type=Path, required=True, help="where to write it")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path.cwd(),
        help="working directory of pod processes without workingDir",
    )
    parser.add_argument(
        "--bookmark-interval", type=float, default=60.0, help="seconds between watch bookmarks"
    )
    parser.add_argument(
        "--watch-history",
        type=int,
        default=10_000,
        help="events kept per resource for watches from a resourceVersion",
    )
    parser.add_argument(
        "--restart-backoff",
        type=float,
        default=1.0,
        help="first restart back-off of crashed containers, in seconds",
    )
    parser.add_argument("--max-restart-backoff", type=float, default=30.0)
    parser.add_argument(
        "--kubectl",
        type=Path,
        default=_default_kubectl(),
        help="kubectl binary whose protobuf descriptors decode protobuf bodies",
    )
    parser.add_argument(
        "--pod-log-dir",
        type=Path,
        default=None,
        help="also write each container's output to DIR/NAMESPACE_POD_UID/CONTAINER/N.log "
        "(kept after the pod is deleted, as a kubelet's /var/log/pods)",
    )
    parser.add_argument(
        "--no-workload-status",
        action="store_true",
        help="leave StatefulSets and DaemonSets (and Deployments and ReplicaSets with "
        "--no-deployment-controller) without the 'available' status",
    )
    parser.add_argument(
        "--no-deployment-controller",
        action="store_true",
        help="do not run the Deployment and ReplicaSet controllers (no pods for them; their "
        "status is the 'available' one unless --no-workload-status)",
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    config = ClusterConfig(
        workdir=args.workdir.resolve(),
        kubeconfig=args.kubeconfig.resolve(),
        history_size=args.watch_history,
        bookmark_interval=args.bookmark_interval,
        restart_backoff=args.restart_backoff,
        max_restart_backoff=args.max_restart_backoff,
        workload_status=not args.no_workload_status,
        deployment_controller=not args.no_deployment_controller,
        kubectl=args.kubectl,
        pod_log_dir=args.pod_log_dir.resolve() if args.pod_log_dir else None,
    )
    cluster = Cluster(config)
    await cluster.start()
    bound: list[str] = []
    app = build_app(cluster, lambda: bound[0] if bound else f"{args.host}:{args.port}")
    # handler_cancellation: a watch or log stream ends as soon as its client disconnects.
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=1.0, handler_cancellation=True
    )
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port, reuse_address=True)
    await site.start()
    port = runner.addresses[0][1]
    bound.append(f"{args.host}:{port}")
    url = f"http://{args.host}:{port}"
    path = args.kubeconfig
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(kubeconfig(url))
    partial.chmod(0o600)
    partial.replace(path)
    print(f"ready {url}", flush=True)
    logging.getLogger(__name__).info("serving the Kubernetes API on %s (kubeconfig %s)", url, path)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await cluster.stop()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.log_level != "debug":
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()

"""`python -m ergon_operator` / `ergon-operator`: run the operator (kopf, standalone).

`--help` needs neither a cluster nor the `operator` extra. Every log line goes through
`RedactingFormatter`, so a store DSN quoted in an error never shows its password.

Startup order, all on one event loop: the health endpoints first (so a standby answers its
probes), then — with leader election on — block until this replica holds the Lease, then run
kopf while a task renews the Lease. Losing the Lease exits the process at once (exit status 3):
kopf and every reconcile stop with it, and the pod restarts as a standby. A clean shutdown
(SIGTERM) stops kopf and then releases the Lease, so the standby takes over at once; the process
then exits without waiting for threads still blocked in a call.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import Any, NoReturn

from ergon import RedactingFormatter, redact
from ergon_operator.settings import Settings, SettingsError

EXTRA_HINT = "pip install 'ergon[operator]'"
LOST_LEASE_EXIT = 3
ENVIRONMENT = """\
environment:
  ERGON_STORE                   the Postgres DSN of the operator's store (required)
  ERGON_STORE_SECRET            Secret name[/key] from which worker pods read their DSN (required)
  ERGON_WORKER_IMAGE            the worker pods' image
  ERGON_WATCH_NAMESPACES        watch only these namespaces, comma-separated (default: all;
                                ERGON_WATCH_NAMESPACE: the same for one namespace)
  ERGON_WORKER_SERVICE_ACCOUNT  the worker pods' service account
  ERGON_HEALTH_PORT             port of /healthz (liveness) and /readyz (readiness) (default 8080)
  ERGON_MAX_RUNNING_PODS        at most this many worker pods at once (default: no limit)
  ERGON_MAX_RUNNING_PODS_PER_NAMESPACE  the same, per namespace (default: no limit)
  ERGON_WORKERS                 FlowRuns reconciled at once (default 8)
  ERGON_LEADER_ELECTION         true: act only while holding a Lease (default false; the chart
                                sets true)
  ERGON_LEASE_NAME              the Lease's name (default ergon-operator)
  ERGON_TENANCY                 shared (default: one store for every namespace) or namespace (a
                                Postgres schema and role per namespace)
  ERGON_TENANT_SECRETS          provision (default: the operator creates each namespace's role,
                                schema and DSN Secret; its DSN needs CREATEROLE) or provided
  ERGON_TENANT_PREFIX           how tenant schemas and roles are named (default ergon_ns_)
  POD_NAMESPACE, POD_NAME       the Lease's namespace and this replica's identity in it
"""

log = logging.getLogger("ergon.operator")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="ergon-operator",
        description="Run the Ergon operator: FlowRun and Signal resources as durable flows in "
        "worker pods. Configured by environment variables (the Helm chart sets them).",
        epilog=ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    sql = commands.add_parser(
        "tenant-sql",
        help="print the SQL that sets up namespaces for ERGON_TENANT_SECRETS=provided",
        description="Print the SQL an administrator runs (psql --set password=... --set "
        "operator=<the operator's role>) to create a namespace's schema, its owner role (no "
        "login; the operator joins it) and its login role (rows only), one namespace per run "
        "(each login role has its own password).",
    )
    sql.add_argument("--namespace", required=True, help="the namespace")
    sql.add_argument(
        "--prefix",
        default=os.environ.get("ERGON_TENANT_PREFIX", "").strip() or "ergon_ns_",
        help="ERGON_TENANT_PREFIX (default: from the environment, else ergon_ns_)",
    )
    args = parser.parse_args(argv)
    if args.command == "tenant-sql":
        _print_tenant_sql(namespace=args.namespace, prefix=args.prefix)
        return
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    try:
        import kopf  # noqa: F401 - only to fail early with a hint

        import ergon_operator.handlers  # noqa: F401 - registers the handlers with kopf
        from ergon_operator.leadership import ElectionSettings, ElectionSettingsError
    except ImportError as exc:
        _exit(f"needs the operator extra: {EXTRA_HINT} ({exc})")
    try:
        settings = Settings.from_env()
        election = ElectionSettings.from_env()
    except (SettingsError, ElectionSettingsError) as exc:
        _exit(str(exc))
    asyncio.run(_run_then_exit(settings=settings, election=election))


async def _run_then_exit(*, settings: Settings, election: Any) -> NoReturn:
    """Run the operator, then exit without waiting for worker threads: a Kubernetes or store
    call still hanging in a thread (Python 3.11's `asyncio.run` would wait for it without a
    limit) must not keep a stopped operator alive once its cleanup and Lease release are done."""
    code = 0
    try:
        await _run(settings=settings, election=election)
    except asyncio.CancelledError:
        pass
    except Exception:
        log.exception("the operator failed")
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


async def _run(*, settings: Settings, election: Any) -> None:
    import kopf
    from kubernetes import client

    from ergon_operator import leadership
    from ergon_operator.health import HealthServer, StoreCheck
    from ergon_operator.kube import load_config

    elector: leadership.LeaderElector | None = None
    if election.enabled:
        load_config()
        elector = leadership.LeaderElector(
            api=client.CoordinationV1Api(client.ApiClient()),
            namespace=election.namespace,
            name=election.lease_name,
            identity=election.identity,
        )
    leadership.register(elector)
    # With a store per namespace the operator's DSN names a database, not a store of its own.
    store_check = StoreCheck(dsn=settings.store, database_only=settings.per_namespace)
    health = HealthServer(
        port=settings.health_port, store_check=store_check, leading=leadership.is_leader
    )
    await health.start()
    renewing: asyncio.Task[None] | None = None
    try:
        if elector is not None:
            log.info(
                "leader election on: %s is a candidate for lease %s/%s",
                election.identity,
                election.namespace,
                election.lease_name,
            )
            if not await _until_signal(elector.acquire()):
                return  # stopped while standing by
            renewing = asyncio.create_task(elector.keep_leading(on_lost=_lost_lease))
        await kopf.operator(
            standalone=True,
            clusterwide=not settings.watch_namespaces,
            namespaces=list(settings.watch_namespaces),
            memo=kopf.Memo(settings=settings),
        )
    finally:
        if renewing is not None:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
        if elector is not None:
            await elector.release()
            elector.close()
        await health.stop()
        await store_check.close()


async def _until_signal(work: Any) -> bool:
    """Run `work` until done (True) or until SIGTERM/SIGINT (False): a standby that is told to
    stop must not first wait to become the leader. kopf installs its own handlers later."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        log.info("stopped while standing by")
        return False
    task.result()
    return True


def _lost_lease() -> None:
    """Stop acting at once: no cleanup that could still write to the cluster or the store."""
    logging.shutdown()
    os._exit(LOST_LEASE_EXIT)


def _print_tenant_sql(*, namespace: str, prefix: str) -> None:
    """`ergon-operator tenant-sql`: needs neither a cluster nor a database."""
    import re

    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", namespace):
        _exit(f"{namespace!r} is not a namespace name")
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,29}", prefix):
        _exit(f"--prefix {prefix!r}: lowercase letters, digits and _, at most 30")
    try:
        from ergon_operator.tenancy import tenant_sql
    except ImportError as exc:
        _exit(f"needs the operator extra: {EXTRA_HINT} ({exc})")
    print(tenant_sql(namespace=namespace, prefix=prefix), end="")


def _exit(message: str) -> NoReturn:
    print(f"ergon-operator: {redact(message)}", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    main()

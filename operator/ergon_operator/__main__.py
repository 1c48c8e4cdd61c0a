"""`python -m ergon_operator` / `ergon-operator`: run the operator (kopf, standalone).

`--help` needs neither a cluster nor the `operator` extra. Every log line goes through
`RedactingFormatter`, so a store DSN quoted in an error never shows its password.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import NoReturn

from ergon import RedactingFormatter, redact
from ergon_operator.settings import Settings, SettingsError

EXTRA_HINT = "pip install 'ergon[operator]'"
ENVIRONMENT = """\
environment:
  ERGON_STORE                   the Postgres DSN of the operator's store (required)
  ERGON_STORE_SECRET            Secret name[/key] from which worker pods read their DSN (required)
  ERGON_WORKER_IMAGE            the worker pods' image
  ERGON_WATCH_NAMESPACE         watch one namespace (default: all)
  ERGON_WORKER_SERVICE_ACCOUNT  the worker pods' service account
  ERGON_HEALTH_PORT             liveness endpoint port (default 8080)
  ERGON_RESYNC_SECONDS          seconds between full resyncs (default 30)
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="ergon-operator",
        description="Run the Ergon operator: FlowRun and Signal resources as durable flows in "
        "worker pods. Configured by environment variables (the Helm chart sets them).",
        epilog=ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    try:
        import kopf

        import ergon_operator.handlers  # noqa: F401 - registers the handlers with kopf
    except ImportError as exc:
        _exit(f"needs the operator extra: {EXTRA_HINT} ({exc})")
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        _exit(str(exc))
    kopf.run(
        standalone=True,
        clusterwide=settings.watch_namespace is None,
        namespaces=[settings.watch_namespace] if settings.watch_namespace else [],
        liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
        memo=kopf.Memo(settings=settings),
    )


def _exit(message: str) -> NoReturn:
    print(f"ergon-operator: {redact(message)}", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    main()

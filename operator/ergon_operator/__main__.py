"""`python -m ergon_operator` / `ergon-operator`: run the operator (kopf, standalone)."""

from __future__ import annotations

import logging
import sys

import kopf

from ergon_operator.settings import Settings, SettingsError


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"ergon-operator: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    import ergon_operator.handlers  # noqa: F401 - registers the handlers with kopf

    kopf.run(
        standalone=True,
        clusterwide=settings.watch_namespace is None,
        namespaces=[settings.watch_namespace] if settings.watch_namespace else [],
        liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
        memo=kopf.Memo(settings=settings),
    )


if __name__ == "__main__":
    main()

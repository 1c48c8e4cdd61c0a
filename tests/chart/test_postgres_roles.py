"""The bundled Postgres runs flows under a role without superuser rights (issue 17): the DSN names
that role, the superuser `postgres` has a password of its own that never leaves the release
namespace, and the init script that creates the role takes its names and password from the
environment, quoted by psql."""

from __future__ import annotations

import base64
import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.chart.helm import DEPLOY_POSTGRES, EXISTING_SECRET, find, one, render, render_error
from tests.chart.schemas import restricted_violations, validate_builtin

ADMIN_SECRET = "ergon-postgres-admin"
SCRIPT = "10-ergon-role.sh"
TEAMS = {**DEPLOY_POSTGRES, "worker.extraNamespaces": ["team-a", "team-b"]}
WATCHING = {
    **DEPLOY_POSTGRES,
    "operator.watchNamespaces": ["flows"],
    "worker.extraNamespaces": ["team-a"],
}


def _decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    statefulset = one(docs, "StatefulSet", "ergon-postgres")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _env(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {var["name"]: var.get("value", var.get("valueFrom")) for var in _container(docs)["env"]}


def _script(docs: list[dict[str, Any]]) -> str:
    return str(one(docs, "ConfigMap", "ergon-postgres-init")["data"][SCRIPT])


@pytest.mark.parametrize("values", [TEAMS, WATCHING], ids=["extra-namespaces", "watching"])
def test_every_manifest_validates(values: dict[str, Any]) -> None:
    for doc in render(values):
        validate_builtin(doc)


@pytest.mark.parametrize(
    ("values", "namespaces"),
    [(TEAMS, {"ergon", "team-a", "team-b"}), (WATCHING, {"ergon", "flows", "team-a"})],
    ids=["extra-namespaces", "watching"],
)
def test_the_superuser_password_stays_in_the_release_namespace(
    values: dict[str, Any], namespaces: set[str]
) -> None:
    docs = render(values)
    admin = one(docs, "Secret", ADMIN_SECRET)
    assert admin["metadata"]["namespace"] == "ergon"
    credentials = _decoded(admin)
    assert credentials["username"] == "postgres"
    superuser_password = credentials["password"]
    assert len(superuser_password) == 32 and superuser_password.isalnum()

    dsn_secrets = find(docs, "Secret", "ergon-postgres")
    assert {secret["metadata"]["namespace"] for secret in dsn_secrets} == namespaces
    for secret in dsn_secrets:
        decoded = _decoded(secret)
        assert set(decoded) == {"dsn", "password"}
        assert decoded["password"] != superuser_password
        assert superuser_password not in decoded["dsn"]
    # Nothing but the admin Secret (and the Postgres pod's env reference) carries it.
    for doc in docs:
        if doc is not admin and doc["kind"] == "Secret":
            assert superuser_password not in str(_decoded(doc))
        if doc is not admin:
            assert superuser_password not in str(doc)
            assert base64.b64encode(superuser_password.encode()).decode() not in str(doc)


def test_the_dsn_uses_the_flows_role_not_the_superuser() -> None:
    docs = render(TEAMS)
    decoded = _decoded(find(docs, "Secret", "ergon-postgres")[0])
    assert decoded["dsn"] == (
        f"postgresql://ergon:{decoded['password']}@ergon-postgres.ergon.svc:5432/ergon"
    )
    env = _env(docs)
    # initdb's superuser is `postgres`, with the admin Secret's password ...
    assert env["POSTGRES_USER"] == "postgres"
    assert env["POSTGRES_PASSWORD"] == {"secretKeyRef": {"name": ADMIN_SECRET, "key": "password"}}
    # ... and the init script creates the DSN's role with the DSN Secret's password.
    assert env["ERGON_DB_USER"] == "ergon"
    assert env["ERGON_DB_PASSWORD"] == {
        "secretKeyRef": {"name": "ergon-postgres", "key": "password"}
    }
    assert env["POSTGRES_DB"] == "ergon"
    # The operator reads the DSN, never the admin Secret.
    operator = str(one(docs, "Deployment", "ergon-operator"))
    assert ADMIN_SECRET not in operator


def test_a_given_password_is_the_flows_roles_only() -> None:
    docs = render({**DEPLOY_POSTGRES, "postgres.password": "s3cret-pw", "postgres.user": "flows"})
    decoded = _decoded(one(docs, "Secret", "ergon-postgres"))
    assert decoded["dsn"] == "postgresql://flows:s3cret-pw@ergon-postgres.ergon.svc:5432/ergon"
    assert _decoded(one(docs, "Secret", ADMIN_SECRET))["password"] != "s3cret-pw"
    assert _env(docs)["ERGON_DB_USER"] == "flows"
    assert "s3cret-pw" not in _script(docs)


def test_the_init_script_makes_a_role_without_superuser_rights_that_owns_the_database() -> None:
    docs = render(DEPLOY_POSTGRES)
    script = _script(docs)
    sql = " ".join(script.split("<<'SQL'", 1)[1].split())
    create = re.search(r'CREATE ROLE :"app_user" ([A-Z ]+) PASSWORD :\'app_password\';', sql)
    assert create is not None, sql
    attributes = set(create.group(1).split())
    assert {"LOGIN", "NOSUPERUSER", "NOCREATEDB", "NOCREATEROLE", "NOREPLICATION"} <= attributes
    assert 'ALTER DATABASE :"app_database" OWNER TO :"app_user";' in sql
    assert "REVOKE CREATE ON SCHEMA public FROM PUBLIC;" in sql
    assert sql.startswith("BEGIN;") and sql.endswith("COMMIT; SQL")
    # Every variable the script reads is set on the Postgres container (or by the image).
    env = _env(docs)
    for name in set(re.findall(r"\$\{?([A-Z_]+)", script)) - {"PGHOST", "PGHOSTADDR"}:
        assert name in env, name


def test_the_init_script_passes_names_and_password_to_psql_as_variables(tmp_path: Path) -> None:
    """The script, run with a stand-in psql: the password (quotes, backslash, psql syntax and all)
    reaches psql as one --set argument, and the SQL it sends is the fixed text above."""
    script = tmp_path / SCRIPT
    script.write_text(_script(render(DEPLOY_POSTGRES)))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "psql"
    fake.write_text(
        '#!/bin/sh\nfor a in "$@"; do printf "%s\\0" "$a"; done > "$OUT.args"\ncat > "$OUT.sql"\n'
    )
    fake.chmod(0o755)
    password = "we'ird\"pw;-- :'x' \\ $(id)"
    env = {
        "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "OUT": str(tmp_path / "psql"),
        "POSTGRES_USER": "postgres",
        "POSTGRES_DB": "ergon",
        "ERGON_DB_USER": "ergon",
        "ERGON_DB_PASSWORD": password,
    }
    subprocess.run([str(script)], env=env, check=True, timeout=30)
    args = (tmp_path / "psql.args").read_bytes().decode().split("\0")[:-1]
    assert f"app_password={password}" in args
    assert "app_user=ergon" in args and "app_database=ergon" in args
    assert args[args.index("--username") + 1] == "postgres"
    assert "ON_ERROR_STOP=1" in args
    sql = (tmp_path / "psql.sql").read_text()
    assert password not in sql and "PASSWORD :'app_password'" in sql


def test_the_init_script_is_a_read_only_configmap_volume() -> None:
    docs = render(DEPLOY_POSTGRES)
    statefulset = one(docs, "StatefulSet", "ergon-postgres")
    pod = statefulset["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["initdb"]["configMap"] == {"name": "ergon-postgres-init", "defaultMode": 0o555}
    mounts = {mount["mountPath"]: mount for mount in _container(docs)["volumeMounts"]}
    assert mounts["/docker-entrypoint-initdb.d"] == {
        "name": "initdb",
        "mountPath": "/docker-entrypoint-initdb.d",
        "readOnly": True,
    }
    assert _container(docs)["securityContext"]["readOnlyRootFilesystem"] is True
    assert restricted_violations(pod) == []


@pytest.mark.parametrize("user", ["postgres", "pg_monitor"])
def test_the_flows_role_cannot_be_the_superuser(user: str) -> None:
    message = render_error({**DEPLOY_POSTGRES, "postgres.user": user})
    assert "postgres.user must not be `postgres`" in message


def test_an_existing_secret_gets_no_bundled_roles() -> None:
    docs = render({**EXISTING_SECRET, "postgres.networkPolicy.enabled": True})
    assert not find(docs, "Secret")
    assert not find(docs, "ConfigMap")
    assert not find(docs, "StatefulSet")

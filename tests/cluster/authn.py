"""Who a request comes from: the user its bearer token names (authentication only).

The test cluster authorizes everything, but it tells its clients apart the way kube-apiserver's
authenticators do, so a test can ask which requests a ServiceAccount made (the operator's RBAC
test reads them from the request log):

- the kubeconfig's static token (`ADMIN_TOKEN`) is the user `ADMIN_USER`, as kind's admin;
- a ServiceAccount token (a JWT, as `TokenRequest` on `serviceaccounts/{name}/token` mints it:
  `kubectl create token NAME`) is `system:serviceaccount:{namespace}:{name}`. Its signature is
  not checked (tokens are unsigned here);
- no token is `system:anonymous`; anything else `unknown`.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

ADMIN_TOKEN = "ergon-test-token"
ADMIN_USER = "kubernetes-admin"
ANONYMOUS = "system:anonymous"
UNKNOWN = "unknown"
ISSUER = "https://kubernetes.default.svc.cluster.local"


def service_account_user(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def user_of(authorization: str | None) -> str:
    """The user an `Authorization` header authenticates as."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return ANONYMOUS
    if token == ADMIN_TOKEN:
        return ADMIN_USER
    claims = _claims(token)
    subject = claims.get("sub") if claims else None
    return subject if isinstance(subject, str) and subject else UNKNOWN


def service_account_token(
    namespace: str,
    name: str,
    uid: str = "",
    *,
    audiences: list[str] | None = None,
    seconds: int = 3600,
) -> tuple[str, int]:
    """An (unsigned) ServiceAccount token and its expiry (Unix seconds)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": service_account_user(namespace, name),
        "aud": audiences or [ISSUER],
        "iat": now,
        "nbf": now,
        "exp": now + seconds,
        "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}},
    }
    header = {"alg": "none", "typ": "JWT"}
    return f"{_b64(header)}.{_b64(claims)}.", now + seconds


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _claims(token: str) -> dict[str, Any] | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode()))
    except ValueError:
        return None
    return claims if isinstance(claims, dict) else None

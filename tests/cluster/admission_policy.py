"""ValidatingAdmissionPolicy and ValidatingAdmissionPolicyBinding (admissionregistration.k8s.io/v1),
enforced the way kube-apiserver's ValidatingAdmissionPolicy plugin enforces them.

A chart that ships a policy must see the same refusals here as on a real cluster, so every create
and update of any resource (the main resource or its ``status``) is checked, after defaulting,
pruning and schema validation and just before the write is stored (``strategies.after_write``):

- a policy applies when it has a binding naming it (``spec.policyName``) and its
  ``matchConstraints`` match the request: ``resourceRules`` (apiGroups, apiVersions, resources
  with ``*``, ``*/*``, ``res/sub``, operations, scope, resourceNames) minus
  ``excludeResourceRules``, ``namespaceSelector`` (the namespace's labels; a Namespace's own
  labels; cluster-scoped objects always match), ``objectSelector`` (the object's or the old
  object's labels) and ``matchPolicy: Equivalent`` across the served versions of a custom
  resource; a binding applies when its optional ``matchResources`` match the same way;
- ``matchConditions`` filter (any false: skipped; errors: ``failurePolicy``), ``variables`` are
  evaluated in order (``variables.<name>``, errors surface only where used), then every
  ``validations`` entry. Expressions see ``object``, ``oldObject`` (null on CREATE), ``request``
  (kind, resource, subResource, name, namespace, operation, userInfo, dryRun, options) and
  ``namespaceObject`` (null for cluster-scoped objects), with ``cel.py``'s functions;
- a false validation is a denial with ``messageExpression``'s value, else ``message``, else
  ``failed expression: <expression>``; an expression that fails at runtime (``expression 'e'
  resulted in error: no such key: x``) or does not compile here (``compilation error: ...``) is a
  denial when ``failurePolicy`` is ``Fail`` (the default) and ignored with ``Ignore``;
- each denial goes to the binding's ``validationActions``: ``Deny`` refuses the request with the
  first one (reason ``Invalid`` / 422 unless the validation names another reason: ``Forbidden``
  403, ``Unauthorized`` 401, ``RequestEntityTooLarge`` 413; message ``<resource> "<name>" is
  forbidden: ValidatingAdmissionPolicy '<p>' with binding '<b>' denied request: <message>``);
  ``Warn`` adds a ``Warning`` header (``Validation failed for ValidatingAdmissionPolicy '<p>'
  with binding '<b>': <message>``); ``Audit`` does nothing (there is no audit log).

Writing a policy is validated as kube-apiserver validates it: every expression must compile
(``spec.validations[0].expression: Invalid value: "...": compilation failed: ERROR: <input>:1:5:
...``), with undeclared names and ``variables.<unknown>`` refused. Expressions calling a
Kubernetes CEL library this server lacks are accepted (the real server accepts them), reported in
``status.typeChecking`` and fail at admission as compilation errors. ``status`` is computed on
write (``observedGeneration``, ``typeChecking.expressionWarnings`` for fields of the matched
kinds' schemas an expression names but the schema lacks). ``paramKind`` / ``paramRef`` are refused
(not supported). Admission policies never apply to admissionregistration.k8s.io objects, nor to
writes the server's own controllers make in process (kubelet, Deployment and ReplicaSet
controllers, garbage collector), nor to DELETE or CONNECT requests or subresources other than
``status``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import celpy
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

from . import cel
from .authn import ADMIN_USER, ANONYMOUS
from .errors import ApiError, Cause
from .resources import ResourceType, TypeRegistry
from .schemas import SchemaNode
from .selectors import labels_match, selector_from_label_selector
from .store import Store, name_of, namespace_of

JSON = dict[str, Any]

GROUP = "admissionregistration.k8s.io"
POLICY_KIND = "ValidatingAdmissionPolicy"
BINDING_KIND = "ValidatingAdmissionPolicyBinding"
POLICIES = f"validatingadmissionpolicies.{GROUP}"
BINDINGS = f"validatingadmissionpolicybindings.{GROUP}"

_DECLARED = frozenset({"object", "oldObject", "request", "namespaceObject", "variables"})
_OPERATIONS = ("*", "CONNECT", "CREATE", "DELETE", "UPDATE")
_ACTIONS = ("Audit", "Deny", "Warn")
_REASONS = ("Unauthorized", "Forbidden", "Invalid", "RequestEntityTooLarge")
_CODES = {"Forbidden": 403, "Unauthorized": 401, "RequestEntityTooLarge": 413, "Invalid": 422}
_IDENTIFIER = re.compile(r"^[_a-zA-Z][_a-zA-Z0-9]*$")
_QUALIFIED_NAME = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_MAX_MESSAGE = 5 * 1024  # celconfig.MaxEvaluatedMessageExpressionSizeBytes
_MAX_TYPES_TO_CHECK = 10


# the request being served


@dataclass
class RequestContext:
    """What admission knows of the API request being served; ``server.py`` sets it per request.

    ``group``/``resource``/``subresource`` name the request's target, so that writes the request
    causes to other objects (a store listener's follow-up) are not admitted as if requested.
    """

    store: Store
    types: TypeRegistry
    user: str
    group: str
    resource: str
    subresource: str = ""
    dry_run: bool = False
    field_manager: str = ""
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)


_REQUEST: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "admission_request", default=None
)


@contextlib.contextmanager
def serving(context: RequestContext) -> Iterator[RequestContext]:
    """Make ``context`` the request that :func:`admit` sees while the block runs."""
    token = _REQUEST.set(context)
    try:
        yield context
    finally:
        _REQUEST.reset(token)


def _groups(user: str) -> list[str]:
    """The groups kube-apiserver's authenticators give ``user`` (as in kind)."""
    if user == ANONYMOUS:
        return ["system:unauthenticated"]
    if user.startswith("system:serviceaccount:"):
        namespace = user.split(":")[2]
        return [
            "system:serviceaccounts",
            f"system:serviceaccounts:{namespace}",
            "system:authenticated",
        ]
    if user == ADMIN_USER:
        return ["kubeadm:cluster-admins", "system:authenticated"]
    return ["system:authenticated"]


# compiled policies


@dataclass(frozen=True)
class Expression:
    """One compiled expression, or why it does not compile here (``error``)."""

    source: str
    runner: celpy.Runner | None = field(repr=False)
    error: str = ""


@dataclass(frozen=True)
class Validation:
    expression: Expression
    message: str
    message_expression: Expression | None
    reason: str


@dataclass(frozen=True)
class Policy:
    name: str
    failure_policy: str
    constraints: JSON
    variables: tuple[tuple[str, Expression], ...]
    match_conditions: tuple[Expression, ...]
    validations: tuple[Validation, ...]


def _problems(source: str, variables: Sequence[str]) -> tuple[list[str], list[str]]:
    """cel-go's compile errors for ``source``, and what only the test cluster cannot compile."""
    missing: list[str] = []
    try:
        cel.program(source)
    except cel.CelNotImplemented as exc:
        missing.append(str(exc))
    except cel.CelUnsupported as exc:
        return [str(exc)], []
    try:
        errors, kubernetes = cel.check_names(source, _DECLARED, variables)
    except cel.CelUnsupported:
        return [], missing
    return errors, missing + kubernetes


def _expression(source: str, variables: Sequence[str]) -> Expression:
    errors, missing = _problems(source, variables)
    if errors:  # refused when the policy was written; kept for policies stored otherwise
        return Expression(source, None, "compilation failed: " + "\n".join(errors))
    if missing:
        detail = f"expression '{source}' does not compile in the test cluster: "
        return Expression(source, None, detail + "\n".join(missing))
    return Expression(source, cel.program(source))


@functools.lru_cache(maxsize=256)
def _compile(name: str, spec_json: str) -> Policy:
    spec = json.loads(spec_json)
    names: list[str] = []
    variables: list[tuple[str, Expression]] = []
    for variable in spec.get("variables") or []:
        variables.append((str(variable.get("name")), _expression(variable["expression"], names)))
        names.append(str(variable.get("name")))
    validations = tuple(
        Validation(
            _expression(str(v.get("expression") or ""), names),
            str(v.get("message") or ""),
            _expression(str(v["messageExpression"]), names) if v.get("messageExpression") else None,
            str(v.get("reason") or ""),
        )
        for v in spec.get("validations") or []
    )
    return Policy(
        name=name,
        failure_policy=str(spec.get("failurePolicy") or "Fail"),
        constraints=spec.get("matchConstraints") or {},
        variables=tuple(variables),
        match_conditions=tuple(
            _expression(str(c.get("expression") or ""), names)
            for c in spec.get("matchConditions") or []
        ),
        validations=validations,
    )


def _policy(obj: JSON) -> Policy:
    spec = obj.get("spec") or {}
    return _compile(name_of(obj), json.dumps(spec, sort_keys=True))


# matching


@dataclass(frozen=True)
class Attributes:
    """The request as admission sees it (``admission.Attributes``)."""

    rtype: ResourceType
    operation: str
    subresource: str
    namespace: str
    name: str
    obj: JSON
    old: JSON | None

    @property
    def is_namespace(self) -> bool:
        return self.rtype.group == "" and self.rtype.plural == "namespaces"


def _resource_matches(pattern: str, resource: str, subresource: str) -> bool:
    wanted, _, sub = pattern.partition("/")
    return wanted in ("*", resource) and sub in ("*", subresource)


def _rule_matches(rule: JSON, attrs: Attributes, version: str) -> bool:
    def listed(key: str, value: str) -> bool:
        values = rule.get(key) or []
        return "*" in values or value in values

    rtype = attrs.rtype
    if not (
        listed("operations", attrs.operation)
        and listed("apiGroups", rtype.group)
        and listed("apiVersions", version)
    ):
        return False
    if not any(
        _resource_matches(str(r), rtype.plural, attrs.subresource)
        for r in rule.get("resources") or []
    ):
        return False
    scope = rule.get("scope") or "*"
    cluster_scoped = attrs.is_namespace or not rtype.namespaced
    if (scope == "Namespaced" and cluster_scoped) or (scope == "Cluster" and not cluster_scoped):
        return False
    names = rule.get("resourceNames") or []
    return not names or attrs.name in names


def _matched_version(
    rules: list[JSON], policy: str, attrs: Attributes, types: TypeRegistry
) -> str | None:
    """The version a rule matches the request in: its own, or (``Equivalent``) another served
    version of the same custom resource, whose form the policy then sees; None if no rule does."""
    rtype = attrs.rtype
    if any(_rule_matches(rule, attrs, rtype.version) for rule in rules):
        return rtype.version
    if policy == "Exact" or not rtype.custom:
        return None
    for version in types.versions(rtype.group):
        other = types.get(rtype.group, version, rtype.plural)
        if version == rtype.version or other is None:
            continue
        if any(_rule_matches(rule, attrs, version) for rule in rules):
            return version
    return None


def _labels(obj: JSON | None) -> JSON:
    return {"metadata": {"labels": ((obj or {}).get("metadata") or {}).get("labels") or {}}}


def _namespace_selected(selector: Any, attrs: Attributes, store: Store) -> bool:
    if not attrs.namespace and not attrs.is_namespace:
        return True  # cluster-scoped objects are never exempted by a namespace selector
    requirements = selector_from_label_selector(selector if isinstance(selector, dict) else None)
    if not requirements:
        return True
    if attrs.is_namespace and not attrs.subresource:
        namespace: JSON | None = attrs.obj
    else:
        namespace = store.get("namespaces", "", attrs.namespace)
    return labels_match(requirements, _labels(namespace))


def _object_selected(selector: Any, attrs: Attributes) -> bool:
    requirements = selector_from_label_selector(selector if isinstance(selector, dict) else None)
    if not requirements:
        return True
    return labels_match(requirements, _labels(attrs.obj)) or (
        attrs.old is not None and labels_match(requirements, _labels(attrs.old))
    )


def _matches(
    criteria: JSON, attrs: Attributes, context: RequestContext, *, binding: bool
) -> str | None:
    """The matched version when ``criteria`` (matchConstraints / matchResources) match."""
    if not _namespace_selected(criteria.get("namespaceSelector"), attrs, context.store):
        return None
    if not _object_selected(criteria.get("objectSelector"), attrs):
        return None
    policy = str(criteria.get("matchPolicy") or "Equivalent")
    excluded = criteria.get("excludeResourceRules") or []
    if excluded and _matched_version(excluded, policy, attrs, context.types) is not None:
        return None
    rules = criteria.get("resourceRules") or []
    if binding and not rules:
        return attrs.rtype.version
    return _matched_version(rules, policy, attrs, context.types)


# evaluation


@dataclass(frozen=True)
class Decision:
    """A validation that denies (its message and reason), before the binding's actions."""

    message: str
    reason: str = ""


def _run(expression: Expression, activation: dict[str, Any]) -> tuple[Any, str | None]:
    """The expression's CEL value, or the error kube-apiserver reports for it."""
    if expression.runner is None:
        return None, f"compilation error: {expression.error}"
    try:
        return cel.evaluate(expression.runner, activation), None
    except cel.CelError as exc:
        return None, f"expression '{expression.source}' resulted in error: {exc}"


def _variable(expression: Expression, activation: dict[str, Any]) -> Any:
    """A variable's value; an error is a value too, failing whichever expression reads it (as
    cel-go's lazily evaluated variables fail only where used, with the variable's own error)."""
    if expression.runner is None:
        return CELEvalError(f"compilation error: {expression.error}")
    try:
        return cel.evaluate(expression.runner, activation)
    except cel.CelError as exc:
        return CELEvalError(str(exc))


def _is_true(value: Any) -> bool:
    return isinstance(value, celtypes.BoolType | bool) and bool(value)


def _is_false(value: Any) -> bool:
    return isinstance(value, celtypes.BoolType | bool) and not bool(value)


def _message(validation: Validation, activation: dict[str, Any]) -> str:
    if validation.message_expression is not None:
        value, error = _run(validation.message_expression, activation)
        if error is None and isinstance(value, str):  # cel-python's ``+`` gives a plain str
            text = str(value).strip()
            if text and len(text.encode()) <= _MAX_MESSAGE and "\n" not in text:
                return text
    if validation.message.strip():
        return validation.message.strip()
    return f"failed expression: {validation.expression.source.strip()}"


def _decide(policy: Policy, activation: dict[str, Any]) -> list[Decision]:
    """The denials of one policy for one request (``validator.Validate``)."""
    fail = policy.failure_policy != "Ignore"
    values: dict[Any, Any] = {}
    activation["variables"] = celtypes.MapType(values)
    for name, expression in policy.variables:
        values[celtypes.StringType(name)] = _variable(expression, activation)
        activation["variables"] = celtypes.MapType(values)
    errors: list[str] = []
    for condition in policy.match_conditions:
        value, error = _run(condition, activation)
        if error is not None:
            errors.append(error)
        elif _is_false(value):
            return []
    if errors:
        if not fail:
            return []
        return [Decision(errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]")]
    decisions: list[Decision] = []
    for validation in policy.validations:
        value, error = _run(validation.expression, activation)
        if error is not None:
            if fail:
                decisions.append(Decision(error))
        elif not _is_true(value):
            decisions.append(Decision(_message(validation, activation), validation.reason))
    return decisions


def _presented(obj: JSON | None, rtype: ResourceType, version: str) -> JSON | None:
    """The object in the version the policy matched (custom resources convert with ``None``)."""
    if obj is None or not rtype.custom:
        return obj
    return {**obj, "apiVersion": f"{rtype.group}/{version}"}


def _request(attrs: Attributes, context: RequestContext, version: str) -> JSON:
    rtype = attrs.rtype
    kind = {"group": rtype.group, "version": version, "kind": rtype.kind}
    resource = {"group": rtype.group, "version": version, "resource": rtype.plural}
    options: JSON = {
        "kind": "CreateOptions" if attrs.operation == "CREATE" else "UpdateOptions",
        "apiVersion": "meta.k8s.io/v1",
    }
    if context.field_manager:
        options["fieldManager"] = context.field_manager
    return {
        "kind": kind,
        "resource": resource,
        "subResource": attrs.subresource,
        "requestKind": {**kind, "version": rtype.version},
        "requestResource": {**resource, "version": rtype.version},
        "requestSubResource": attrs.subresource,
        "name": attrs.name,
        "namespace": attrs.namespace,
        "operation": attrs.operation,
        "userInfo": {"username": context.user, "groups": _groups(context.user)},
        "dryRun": context.dry_run,
        "options": options,
    }


def _namespace_object(attrs: Attributes, store: Store) -> JSON | None:
    if not attrs.namespace or attrs.is_namespace:
        return None
    namespace = store.get("namespaces", "", attrs.namespace)
    if namespace is None:
        return None
    meta = {k: v for k, v in namespace["metadata"].items() if k != "managedFields"}
    return {
        "metadata": meta,
        "spec": namespace.get("spec") or {},
        "status": namespace.get("status") or {},
    }


def admit(rtype: ResourceType, obj: JSON) -> None:
    """Run the bound policies matching this create or update of ``obj``; raise the first denial.

    Called just before the write is stored; the stored object (if any) is the old one. Does
    nothing outside an API request (in-process controllers) or for requests on other targets.
    """
    context = _REQUEST.get()
    if (
        context is None
        or rtype.group == GROUP
        or (context.group, context.resource) != (rtype.group, rtype.plural)
        or context.subresource not in ("", "status")
    ):
        return
    store = context.store
    policies = store.objects(POLICIES)
    bindings = store.objects(BINDINGS) if policies else []
    if not bindings:
        return
    namespace, name = namespace_of(obj), name_of(obj)
    old = store.get(rtype.storage_key, namespace if rtype.namespaced else "", name)
    attrs = Attributes(
        rtype=rtype,
        operation="CREATE" if old is None else "UPDATE",
        subresource=context.subresource,
        namespace=namespace if rtype.namespaced else "",
        name=name,
        obj=obj,
        old=old,
    )
    denied: list[tuple[str, str, Decision]] = []
    for policy_obj in policies:
        policy_name = name_of(policy_obj)
        bound = [b for b in bindings if (b.get("spec") or {}).get("policyName") == policy_name]
        if not bound:
            continue
        policy = _policy(policy_obj)
        version = _matches(policy.constraints, attrs, context, binding=False)
        if version is None:
            continue
        decisions: list[Decision] | None = None
        for binding in bound:
            spec = binding.get("spec") or {}
            criteria = spec.get("matchResources")
            if isinstance(criteria, dict) and (
                _matches(criteria, attrs, context, binding=True) is None
            ):
                continue
            if decisions is None:
                activation = {
                    "object": json_to_cel(_presented(obj, rtype, version)),
                    "oldObject": json_to_cel(_presented(old, rtype, version)),
                    "request": json_to_cel(_request(attrs, context, version)),
                    "namespaceObject": json_to_cel(_namespace_object(attrs, store)),
                }
                decisions = _decide(policy, activation)
            for decision in decisions:
                for action in spec.get("validationActions") or []:
                    if action == "Deny":
                        denied.append((policy_name, name_of(binding), decision))
                    elif action == "Warn":
                        context.warn(
                            f"Validation failed for ValidatingAdmissionPolicy '{policy_name}' "
                            f"with binding '{name_of(binding)}': {decision.message}"
                        )
    if denied:
        raise _denial(rtype, name, *denied[0])


def _denial(
    rtype: ResourceType, name: str, policy: str, binding: str, decision: Decision
) -> ApiError:
    """The refusal as the dispatcher builds it: ``admission.NewForbidden`` with the decision's
    reason and code, and the message again as the one cause (kubectl prints the cause)."""
    message = f"ValidatingAdmissionPolicy '{policy}' with binding '{binding}' denied request: "
    message += decision.message
    reason = decision.reason or "Invalid"
    qualified = f"{rtype.plural}.{rtype.group}" if rtype.group else rtype.plural
    details: JSON = {"name": name} if name else {}
    if rtype.group:
        details["group"] = rtype.group
    details["kind"] = rtype.plural
    details["causes"] = [{"message": message}]
    return ApiError(
        _CODES.get(reason, 422), reason, f'{qualified} "{name}" is forbidden: {message}', details
    )


# defaulting, validation and status of the policy objects themselves


def _default_criteria(criteria: JSON) -> None:
    criteria.setdefault("matchPolicy", "Equivalent")
    criteria.setdefault("namespaceSelector", {})
    criteria.setdefault("objectSelector", {})
    for key in ("resourceRules", "excludeResourceRules"):
        for rule in criteria.get(key) or []:
            if isinstance(rule, dict):
                rule.setdefault("scope", "*")


def _spec(obj: JSON) -> JSON:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = obj["spec"] = {}
    return spec


def default(kind: str, obj: JSON) -> None:
    """The API's defaults (``failurePolicy: Fail``, ``matchPolicy: Equivalent``, empty
    selectors, rule ``scope: "*"``) for a policy or binding being written."""
    spec = _spec(obj)
    if kind == POLICY_KIND:
        spec.setdefault("failurePolicy", "Fail")
        criteria = spec.get("matchConstraints")
    else:
        criteria = spec.get("matchResources")
    if isinstance(criteria, dict):
        _default_criteria(criteria)


def _quoted(value: Any) -> str:
    return json.dumps(value)


def _unsupported(value: Any, supported: Sequence[str], path: str) -> Cause:
    shown = ", ".join(_quoted(s) for s in supported)
    return Cause(
        "FieldValueNotSupported",
        f"Unsupported value: {_quoted(value)}: supported values: {shown}",
        path,
    )


def _required(path: str, detail: str = "") -> Cause:
    return Cause("FieldValueRequired", "Required value" + (f": {detail}" if detail else ""), path)


def _not_supported_here(path: str, what: str) -> Cause:
    return Cause(
        "FieldValueForbidden",
        f"Forbidden: {what} is not supported by the test cluster (tests/cluster/README.md)",
        path,
    )


def _check_expression(source: Any, path: str, variables: Sequence[str]) -> list[Cause]:
    if not isinstance(source, str) or not source.strip():
        return [_required(path, "expression is not specified")]
    errors, _ = _problems(source, variables)
    if not errors:
        return []
    detail = "compilation failed: " + "\n".join(errors)
    return [Cause("FieldValueInvalid", f"Invalid value: {_quoted(source)}: {detail}", path)]


def _check_criteria(criteria: Any, path: str, *, binding: bool) -> list[Cause]:
    if not isinstance(criteria, dict):
        return [] if binding else [_required(path)]
    causes: list[Cause] = []
    policy = criteria.get("matchPolicy")
    if policy is not None and policy not in ("Exact", "Equivalent"):
        causes.append(_unsupported(policy, ("Equivalent", "Exact"), f"{path}.matchPolicy"))
    rules = criteria.get("resourceRules") or []
    if not rules and not binding:
        causes.append(_required(f"{path}.resourceRules"))
    for key in ("resourceRules", "excludeResourceRules"):
        for index, rule in enumerate(criteria.get(key) or []):
            at = f"{path}.{key}[{index}]"
            if not isinstance(rule, dict):
                causes.append(_required(at))
                continue
            for listed in ("apiGroups", "apiVersions", "resources", "operations"):
                if not rule.get(listed):
                    causes.append(_required(f"{at}.{listed}"))
            for op_index, operation in enumerate(rule.get("operations") or []):
                if operation not in _OPERATIONS:
                    causes.append(
                        _unsupported(operation, _OPERATIONS, f"{at}.operations[{op_index}]")
                    )
            scope = rule.get("scope")
            if scope is not None and scope not in ("*", "Cluster", "Namespaced"):
                causes.append(_unsupported(scope, ("*", "Cluster", "Namespaced"), f"{at}.scope"))
    return causes


def validate(kind: str, obj: JSON) -> list[Cause]:
    """What kube-apiserver's validation refuses in a policy or binding (422 causes)."""
    spec = obj.get("spec") or {}
    return _validate_policy(spec) if kind == POLICY_KIND else _validate_binding(spec)


def _validate_policy(spec: JSON) -> list[Cause]:
    causes: list[Cause] = []
    if spec.get("paramKind") is not None:
        causes.append(_not_supported_here("spec.paramKind", "paramKind"))
    failure = spec.get("failurePolicy")
    if failure not in (None, "Fail", "Ignore"):
        causes.append(_unsupported(failure, ("Fail", "Ignore"), "spec.failurePolicy"))
    causes += _check_criteria(spec.get("matchConstraints"), "spec.matchConstraints", binding=False)
    names: list[str] = []
    for index, variable in enumerate(spec.get("variables") or []):
        at = f"spec.variables[{index}]"
        name = str(variable.get("name") or "")
        if not name:
            causes.append(_required(f"{at}.name"))
        elif not _IDENTIFIER.match(name):
            causes.append(
                Cause(
                    "FieldValueInvalid",
                    f"Invalid value: {_quoted(name)}: name is not a valid CEL identifier",
                    f"{at}.name",
                )
            )
        elif name in names:
            causes.append(
                Cause("FieldValueDuplicate", f"Duplicate value: {_quoted(name)}", f"{at}.name")
            )
        causes += _check_expression(variable.get("expression"), f"{at}.expression", names)
        names.append(name)
    seen: set[str] = set()
    for index, condition in enumerate(spec.get("matchConditions") or []):
        at = f"spec.matchConditions[{index}]"
        name = str(condition.get("name") or "")
        if not name:
            causes.append(_required(f"{at}.name"))
        elif not _QUALIFIED_NAME.match(name):
            message = (
                f"Invalid value: {_quoted(name)}: name part must consist of alphanumeric "
                "characters, '-', '_' or '.', and must start and end with an alphanumeric "
                "character"
            )
            causes.append(Cause("FieldValueInvalid", message, f"{at}.name"))
        elif name in seen:
            causes.append(
                Cause("FieldValueDuplicate", f"Duplicate value: {_quoted(name)}", f"{at}.name")
            )
        seen.add(name)
        causes += _check_expression(condition.get("expression"), f"{at}.expression", names)
    validations = spec.get("validations") or []
    if not validations and not spec.get("auditAnnotations"):
        causes.append(
            _required(
                "spec.validations", "validations or auditAnnotations must contain at least one item"
            )
        )
    for index, validation in enumerate(validations):
        at = f"spec.validations[{index}]"
        causes += _check_expression(validation.get("expression"), f"{at}.expression", names)
        message = validation.get("message")
        if isinstance(message, str) and "\n" in message:
            causes.append(
                Cause(
                    "FieldValueInvalid",
                    f"Invalid value: {_quoted(message)}: message must not contain line breaks",
                    f"{at}.message",
                )
            )
        if validation.get("messageExpression"):
            causes += _check_expression(
                validation["messageExpression"], f"{at}.messageExpression", names
            )
        reason = validation.get("reason")
        if reason is not None and reason not in _REASONS:
            causes.append(_unsupported(reason, _REASONS, f"{at}.reason"))
    for index, annotation in enumerate(spec.get("auditAnnotations") or []):
        at = f"spec.auditAnnotations[{index}]"
        if not annotation.get("key"):
            causes.append(_required(f"{at}.key"))
        causes += _check_expression(
            annotation.get("valueExpression"), f"{at}.valueExpression", names
        )
    return causes


def _validate_binding(spec: JSON) -> list[Cause]:
    causes: list[Cause] = []
    if not spec.get("policyName"):
        causes.append(_required("spec.policyName"))
    if spec.get("paramRef") is not None:
        causes.append(_not_supported_here("spec.paramRef", "paramRef"))
    actions = spec.get("validationActions") or []
    if not actions:
        causes.append(
            _required("spec.validationActions", "at least one validation action is required")
        )
    seen: set[str] = set()
    for index, action in enumerate(actions):
        at = f"spec.validationActions[{index}]"
        if action in seen:
            causes.append(Cause("FieldValueDuplicate", f"Duplicate value: {_quoted(action)}", at))
        elif action not in _ACTIONS:
            causes.append(_unsupported(action, _ACTIONS, at))
        seen.add(action)
    if {"Deny", "Warn"} <= seen:
        shown = ", ".join(_quoted(a) for a in actions)
        causes.append(
            Cause(
                "FieldValueInvalid",
                f"Invalid value: []admissionregistration.ValidationAction{{{shown}}}: must not "
                "contain both Deny and Warn (repeating the same validation failure information "
                "in the API response and headers serves no purpose)",
                "spec.validationActions",
            )
        )
    causes += _check_criteria(spec.get("matchResources"), "spec.matchResources", binding=True)
    return causes


def policy_status(obj: JSON) -> JSON:
    """The status kube-apiserver's type-checking controller writes: ``observedGeneration`` and
    ``typeChecking`` (warnings for fields the matched kinds' schemas lack, and here also for
    expressions only the test cluster cannot compile)."""
    context = _REQUEST.get()
    warnings = _type_check(obj.get("spec") or {}, context.types if context else None)
    return {
        "observedGeneration": (obj.get("metadata") or {}).get("generation", 1),
        "typeChecking": {"expressionWarnings": warnings} if warnings else {},
    }


def _kinds_to_check(spec: JSON, types: TypeRegistry) -> list[tuple[str, SchemaNode]]:
    """The matched kinds with known schemas, as ``typesToCheck`` picks them: rules without
    wildcards, resources without subresources, sorted by group, version and kind; at most 10."""
    found: dict[tuple[str, str, str], SchemaNode] = {}
    for rule in (spec.get("matchConstraints") or {}).get("resourceRules") or []:
        groups, versions = rule.get("apiGroups") or [], rule.get("apiVersions") or []
        if any("*" in g for g in groups) or any("*" in v for v in versions):
            continue
        resources = [r for r in rule.get("resources") or [] if "*" not in r and "/" not in r]
        for group in sorted(groups):
            for version in sorted(versions):
                for resource in sorted(resources):
                    rtype = types.get(group, version, resource)
                    if rtype is None:
                        continue
                    if rtype.custom:
                        node = SchemaNode.for_custom_resource(rtype.schema or {})
                    else:
                        node = SchemaNode.for_definition(rtype.definition or "")
                    found[(rtype.group, rtype.version, rtype.kind)] = node
    ordered = sorted(found.items())[:_MAX_TYPES_TO_CHECK]
    return [(f"{g}/{v}, Kind={k}", node) for (g, v, k), node in ordered]


def _undefined_fields(source: str, node: SchemaNode) -> list[str]:
    try:
        ast = cel.parse(source)
    except cel.CelUnsupported:
        return []
    issues: list[str] = []
    for chain in cel.selections(ast, ("object", "oldObject")):
        current = node
        for token in chain[1:]:
            if current.type not in (None, "object") or current.is_free_form:
                break
            following = current.field(str(token))
            if following is None:
                issue = cel.issue(
                    source, int(token.line), int(token.column), f"undefined field '{token}'"
                )
                if issue not in issues:
                    issues.append(issue)
                break
            current = following
    return issues


def _type_check(spec: JSON, types: TypeRegistry | None) -> list[JSON]:
    kinds = _kinds_to_check(spec, types) if types is not None else []
    names = [str(v.get("name") or "") for v in spec.get("variables") or []]
    warnings: list[JSON] = []
    for index, validation in enumerate(spec.get("validations") or []):
        for key in ("expression", "messageExpression"):
            source = validation.get(key)
            if not isinstance(source, str) or not source:
                continue
            results = [
                f"{gvk}: " + "\n".join(issues) + "\n"
                for gvk, node in kinds
                if (issues := _undefined_fields(source, node))
            ]
            results += _problems(source, names)[1]
            if results:
                warnings.append(
                    {"fieldRef": f"spec.validations[{index}].{key}", "warning": "\n".join(results)}
                )
    return warnings

"""Validation of custom resources against their CRD schema, with the real server's messages.

Each problem becomes a :class:`~.errors.Cause` whose ``field`` is the JSON path of the offending
value (``spec.retry.maxAttempts``, ``spec.items[0].name``), so a 422 reads the same as one from
kube-apiserver and tests can assert on the path. CEL ``x-kubernetes-validations`` run here too;
transition rules (those naming ``oldSelf``) run only on updates where the old value exists.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from typing import Any

from . import cel
from .errors import Cause
from .schemas import SchemaNode

JSON = dict[str, Any]
log = logging.getLogger(__name__)

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_MISSING = object()


def validate_name(name: str, *, label: bool = False) -> list[Cause]:
    """``metadata.name`` rules: DNS-1123 subdomain (or label, for namespaces and the like)."""
    if not name:
        return [
            Cause(
                "FieldValueRequired",
                "Required value: name or generateName is required",
                "metadata.name",
            )
        ]
    pattern, limit = (_DNS_LABEL, 63) if label else (_DNS_SUBDOMAIN, 253)
    if len(name) <= limit and pattern.match(name):
        return []
    what = "RFC 1123 label" if label else "RFC 1123 subdomain"
    message = (
        f"Invalid value: {json.dumps(name)}: a lowercase {what} must consist of lower case "
        "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
    )
    return [Cause("FieldValueInvalid", message, "metadata.name")]


def validate_custom(node: SchemaNode, obj: JSON, old: JSON | None) -> list[Cause]:
    """Every schema and CEL violation of ``obj`` (``old`` is the stored object on updates)."""
    causes: list[Cause] = []
    old_body = _MISSING if old is None else _visible(old)
    _validate(_visible(obj), old_body, node, "", causes, root=True)
    return causes


def _visible(obj: JSON) -> JSON:
    """The object as schemas and rules see it: of metadata, only name and generateName."""
    meta = obj.get("metadata") or {}
    return {**obj, "metadata": {k: meta[k] for k in ("name", "generateName") if k in meta}}


def _kind_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if value is None:
        return "null"
    return "object"


def _show(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(_kind_name(value))
    return json.dumps(value)


def _type_ok(value: Any, schema: JSON) -> bool:
    expected = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, str | int) and not isinstance(value, bool)
    if expected is None:
        return True
    actual = _kind_name(value)
    if expected == "number":
        return actual in ("number", "integer")
    if expected == "integer" and isinstance(value, float) and value.is_integer():
        return True
    return bool(actual == expected)


def _validate(
    value: Any,
    old: Any,
    node: SchemaNode,
    path: str,
    causes: list[Cause],
    root: bool = False,
) -> None:
    schema = node.schema
    if value is None:
        if not schema.get("nullable") and schema.get("type"):
            causes.append(
                Cause(
                    "FieldValueTypeInvalid",
                    f'Invalid value: "null": {path or "<root>"} in body must be of '
                    f'type {schema.get("type")}: "null"',
                    path,
                )
            )
        return
    if not root and not _type_ok(value, schema):
        causes.append(
            Cause(
                "FieldValueTypeInvalid",
                f"Invalid value: {json.dumps(_kind_name(value))}: {path} in body must be of type "
                f"{schema.get('type')}: {json.dumps(_kind_name(value))}",
                path,
            )
        )
        return
    _check_value(value, schema, path, causes)
    if isinstance(value, dict):
        _validate_object(value, old, node, path, causes)
    elif isinstance(value, list):
        _validate_array(value, old, node, path, causes)
    _run_rules(value, old, schema, path, causes)


def _validate_object(
    value: JSON,
    old: Any,
    node: SchemaNode,
    path: str,
    causes: list[Cause],
) -> None:
    schema = node.schema
    for required in schema.get("required") or []:
        if required not in value:
            causes.append(Cause("FieldValueRequired", "Required value", _join(path, required)))
    properties = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    for key, item in value.items():
        sub = properties.get(key, additional if isinstance(additional, dict) else None)
        if sub is None:
            continue
        old_item = old.get(key, _MISSING) if isinstance(old, dict) else _MISSING
        _validate(item, old_item, SchemaNode(sub), _join(path, key), causes)
    min_properties, max_properties = schema.get("minProperties"), schema.get("maxProperties")
    if min_properties is not None and len(value) < min_properties:
        causes.append(
            Cause(
                "FieldValueInvalid",
                f"Invalid value: {len(value)}: {path} in body "
                f"should have at least {min_properties} properties",
                path,
            )
        )
    if max_properties is not None and len(value) > max_properties:
        causes.append(
            Cause(
                "FieldValueTooMany",
                f"Too many: {len(value)}: must have at most {max_properties} items",
                path,
            )
        )


def _validate_array(
    value: list[Any],
    old: Any,
    node: SchemaNode,
    path: str,
    causes: list[Cause],
) -> None:
    schema = node.schema
    items = schema.get("items")
    old_by_key = _correlate(old, node) if isinstance(old, list) else {}
    if isinstance(items, dict):
        item_node = SchemaNode(items)
        for index, item in enumerate(value):
            key = _item_key(item, node)
            old_item = old_by_key.get(key, _MISSING) if key is not None else _MISSING
            _validate(item, old_item, item_node, f"{path}[{index}]", causes)
    min_items, max_items = schema.get("minItems"), schema.get("maxItems")
    if min_items is not None and len(value) < min_items:
        causes.append(
            Cause(
                "FieldValueInvalid",
                f"Invalid value: {len(value)}: {path} in body "
                f"should have at least {min_items} items",
                path,
            )
        )
    if max_items is not None and len(value) > max_items:
        causes.append(
            Cause(
                "FieldValueTooMany",
                f"Too many: {len(value)}: must have at most {max_items} items",
                path,
            )
        )
    if node.list_type in ("set", "map") or schema.get("uniqueItems"):
        seen: set[str] = set()
        for index, item in enumerate(value):
            key = (
                _item_key(item, node)
                if node.list_type == "map"
                else json.dumps(item, sort_keys=True)
            )
            if key is None:
                continue
            if key in seen:
                causes.append(
                    Cause(
                        "FieldValueDuplicate", f"Duplicate value: {_show(item)}", f"{path}[{index}]"
                    )
                )
            seen.add(key)


def _item_key(item: Any, node: SchemaNode) -> str | None:
    if node.list_type == "map" and isinstance(item, dict):
        return json.dumps([item.get(k) for k in node.map_keys])
    if node.list_type == "set":
        return json.dumps(item, sort_keys=True)
    return None


def _correlate(old: list[Any], node: SchemaNode) -> dict[str, Any]:
    out = {}
    for item in old:
        key = _item_key(item, node)
        if key is not None:
            out[key] = item
    return out


def _check_value(value: Any, schema: JSON, path: str, causes: list[Cause]) -> None:
    enum = schema.get("enum")
    if enum is not None and value not in enum:
        supported = ", ".join(json.dumps(v) for v in enum)
        message = f"Unsupported value: {_show(value)}: supported values: {supported}"
        causes.append(Cause("FieldValueNotSupported", message, path))
    if isinstance(value, str):
        pattern = schema.get("pattern")
        if pattern is not None and not re.search(pattern, value):
            causes.append(
                Cause(
                    "FieldValueInvalid",
                    f"Invalid value: {_show(value)}: {path} in body should match '{pattern}'",
                    path,
                )
            )
        if schema.get("maxLength") is not None and len(value) > schema["maxLength"]:
            message = f"Too long: may not be more than {schema['maxLength']} bytes"
            causes.append(Cause("FieldValueTooLong", message, path))
        if schema.get("minLength") is not None and len(value) < schema["minLength"]:
            causes.append(
                Cause(
                    "FieldValueInvalid",
                    f"Invalid value: {_show(value)}: {path} in "
                    f"body should be at least {schema['minLength']} chars long",
                    path,
                )
            )
    if isinstance(value, int | float) and not isinstance(value, bool):
        _check_number(value, schema, path, causes)


def _check_number(value: float, schema: JSON, path: str, causes: list[Cause]) -> None:
    minimum, maximum = schema.get("minimum"), schema.get("maximum")
    if minimum is not None:
        exclusive = bool(schema.get("exclusiveMinimum"))
        if value < minimum or (exclusive and value == minimum):
            word = "greater than" if exclusive else "greater than or equal to"
            causes.append(
                Cause(
                    "FieldValueInvalid",
                    f"Invalid value: {_show(value)}: {path} in body should be {word} {minimum}",
                    path,
                )
            )
    if maximum is not None:
        exclusive = bool(schema.get("exclusiveMaximum"))
        if value > maximum or (exclusive and value == maximum):
            word = "less than" if exclusive else "less than or equal to"
            causes.append(
                Cause(
                    "FieldValueInvalid",
                    f"Invalid value: {_show(value)}: {path} in body should be {word} {maximum}",
                    path,
                )
            )
    multiple = schema.get("multipleOf")
    if multiple and not math.isclose(value / multiple, round(value / multiple)):
        causes.append(
            Cause(
                "FieldValueInvalid",
                f"Invalid value: {_show(value)}: {path} in body should be a multiple of {multiple}",
                path,
            )
        )


@functools.lru_cache(maxsize=1024)
def _compile(rule_json: str) -> cel.Rule | None:
    try:
        return cel.compile_rule(json.loads(rule_json))
    except cel.CelUnsupported as exc:
        log.warning("skipping CEL rule outside the supported subset: %s (%s)", rule_json, exc)
        return None


_REASON_PREFIX = {
    "FieldValueForbidden": "Forbidden: ",
    "FieldValueRequired": "Required value: ",
    "FieldValueDuplicate": "Duplicate value: ",
}


def _run_rules(value: Any, old: Any, schema: JSON, path: str, causes: list[Cause]) -> None:
    for raw in schema.get("x-kubernetes-validations") or []:
        rule = _compile(json.dumps(raw, sort_keys=True))
        if rule is None or (rule.uses_old_self and old is _MISSING):
            continue
        env = {"self": value, "oldSelf": None if old is _MISSING else old}
        try:
            ok = rule.evaluate(env) is True
            message = rule.message
        except cel.CelError as exc:
            ok, message = False, f"{exc} evaluating rule: {rule.source}"
        if ok:
            continue
        field = _join(path, rule.field_path.lstrip(".")) if rule.field_path else path
        reason = rule.reason or "FieldValueInvalid"
        prefix = _REASON_PREFIX.get(reason, f"Invalid value: {json.dumps(_kind_name(value))}: ")
        causes.append(Cause(reason, prefix + message, field or "<nil>"))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key

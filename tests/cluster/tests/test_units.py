"""The server's pure pieces on their own: CEL, selectors, patches, apply, schemas, ages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.cluster import apply, cel, patching
from tests.cluster.errors import ApiError
from tests.cluster.schemas import SchemaNode
from tests.cluster.selectors import labels_match, parse_field_selector, parse_label_selector
from tests.cluster.structural import default_and_prune
from tests.cluster.tables import human_age, json_path
from tests.cluster.validation import validate_custom

POD = SchemaNode.for_definition("io.k8s.api.core.v1.Pod")


@pytest.mark.parametrize(
    ("rule", "env", "expected"),
    [
        ("self == oldSelf", {"self": {"a": [1]}, "oldSelf": {"a": [1]}}, True),
        ("self == oldSelf", {"self": "x", "oldSelf": "y"}, False),
        ("!has(self.x) || self.x.startsWith('a')", {"self": {}}, True),
        ("size(self.items) <= 2 && self.items.all(i, i > 0)", {"self": {"items": [1, 2]}}, True),
        ("self.mode in ['a', 'b'] ? self.n >= 1 : true", {"self": {"mode": "a", "n": 0}}, False),
        ("self.name.matches('^[a-z]+$')", {"self": {"name": "abc"}}, True),
    ],
)
def test_cel_subset(rule: str, env: dict[str, Any], expected: bool) -> None:
    assert cel.compile_rule({"rule": rule}).evaluate(env) is expected


def test_cel_outside_the_subset_is_reported_at_compile_time() -> None:
    with pytest.raises(cel.CelUnsupported):
        cel.compile_rule({"rule": "self.quantity().isGreaterThan(1)"})


@pytest.mark.parametrize(
    ("rule", "env", "expected"),
    [
        ("self == oldSelf", {"self": 1, "oldSelf": 1.0}, True),
        ("self == oldSelf", {"self": True, "oldSelf": 1}, False),
        (
            "self.lowerAscii().split('-') == ['a', 'b'] && ['x', 'y'].join() == 'xy'",
            {"self": "A-b"},
            True,
        ),
        ("self.trim().substring(1, 3) == 'bc' && self.indexOf('c') == 3", {"self": " abc"}, True),
        ("self.isSorted() && self.sum() == 6 && self.min() == 1", {"self": [1, 2, 3]}, True),
    ],
)
def test_cel_kubernetes_additions(rule: str, env: dict[str, Any], expected: bool) -> None:
    assert cel.compile_rule({"rule": rule}).evaluate(env) is expected


def test_cel_errors_read_like_the_api_servers() -> None:
    with pytest.raises(cel.CelError, match=r"^no such key: x$"):
        cel.compile_rule({"rule": "self.x == 1"}).evaluate({"self": {}})


def test_label_selectors() -> None:
    obj = {"metadata": {"labels": {"app": "web", "tier": "front", "n": "3"}}}
    assert labels_match(parse_label_selector("app=web,tier in (front,back),!missing"), obj)
    assert labels_match(parse_label_selector("n>2,app!=db"), obj)
    assert not labels_match(parse_label_selector("app notin (web)"), obj)
    with pytest.raises(ApiError):
        parse_label_selector("app=bad value")
    with pytest.raises(ApiError):
        parse_field_selector("spec.unknown=x", "Pod")


def test_strategic_merge_directives() -> None:
    live = {
        "spec": {
            "containers": [
                {"name": "a", "image": "1", "env": [{"name": "X"}]},
                {"name": "b", "image": "2"},
            ]
        },
        "metadata": {"finalizers": ["f1"]},
    }
    patch = {
        "spec": {"containers": [{"name": "a", "image": "3"}, {"name": "b", "$patch": "delete"}]},
        "metadata": {"finalizers": ["f2"]},
    }
    merged = patching.strategic_merge(live, patch, POD)
    assert merged["spec"]["containers"] == [{"name": "a", "image": "3", "env": [{"name": "X"}]}]
    assert merged["metadata"]["finalizers"] == ["f1", "f2"]


def test_json_patch_errors_name_the_path() -> None:
    with pytest.raises(patching.PatchError, match="missing"):
        patching.json_patch({"a": {}}, [{"op": "remove", "path": "/a/b"}])
    with pytest.raises(patching.PatchError, match="testing value"):
        patching.json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": 2}])
    with pytest.raises(patching.PatchError, match=r"^unable to access invalid index: 3$"):
        patching.json_patch({"a": [1]}, [{"op": "add", "path": "/a/3", "value": 1}])
    with pytest.raises(patching.PatchError, match="replace operation does not apply"):
        patching.json_patch({"a": 1}, [{"op": "replace", "path": "/b", "value": 1}])
    assert patching.json_patch(
        {"a": [1]},
        [
            {"op": "add", "path": "/a/-", "value": 2},
            {"op": "move", "from": "/a", "path": "/b"},
        ],
    ) == {"b": [1, 2]}


def test_apply_merges_lists_by_key_and_removes_what_a_manager_dropped() -> None:
    first = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "labels": {"a": "1"}},
        "spec": {"containers": [{"name": "c", "image": "i", "args": ["x"]}]},
    }
    live = apply.apply(None, first, POD, manager="m", force=False)
    second = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "j"}]},
    }
    again = apply.apply(live, second, POD, manager="m", force=False)
    assert again["spec"]["containers"] == [{"name": "c", "image": "j"}]
    assert "labels" not in again["metadata"]
    with pytest.raises(ApiError) as conflict:
        apply.apply(
            again,
            {**second, "spec": {"containers": [{"name": "c", "image": "k"}]}},
            POD,
            manager="other",
            force=False,
        )
    assert conflict.value.code == 409
    assert conflict.value.causes[0].field == '.spec.containers[name="c"].image'


def test_defaulting_pruning_and_validation_of_a_custom_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["n"],
                "properties": {
                    "n": {"type": "integer", "maximum": 5},
                    "mode": {"type": "string", "default": "fast"},
                    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                },
            }
        },
    }
    node = SchemaNode.for_custom_resource(schema)
    obj: dict[str, Any] = {
        "metadata": {"name": "x", "bogus": 1},
        "spec": {"n": 9, "extra": 1, "free": {"anything": [1]}},
    }
    pruned = default_and_prune(obj, node)
    assert sorted(pruned) == ["metadata.bogus", "spec.extra"]
    assert obj["spec"] == {"n": 9, "mode": "fast", "free": {"anything": [1]}}
    causes = validate_custom(node, obj, None)
    assert [(c.field, c.reason) for c in causes] == [("spec.n", "FieldValueInvalid")]


def test_human_age_and_json_path() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)

    def ago(**delta: float) -> str:
        return human_age((now - timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ"), now)

    assert [ago(seconds=5), ago(minutes=5, seconds=3), ago(hours=5), ago(days=3)] == [
        "5s",
        "5m3s",
        "5h",
        "3d",
    ]
    assert json_path({"a": [{"b": 1}, {"b": 2}]}, ".a[*].b") == [1, 2]
    assert json_path({"a": {"b.c": 3}}, ".a.b\\.c") == [3]


def test_root_rules_see_the_name_but_no_other_metadata() -> None:
    schema = {
        "type": "object",
        "x-kubernetes-validations": [
            {"rule": "self.metadata.name.size() <= 5", "message": "short names only"},
            {"rule": "!has(self.metadata.labels)", "message": "labels are hidden from rules"},
        ],
    }
    long_name = {"metadata": {"name": "too-long", "labels": {"a": "b"}}, "spec": {}}
    causes = validate_custom(SchemaNode(schema), long_name, None)
    assert [(c.field, c.message) for c in causes] == [
        ("<nil>", 'Invalid value: "object": short names only')
    ]

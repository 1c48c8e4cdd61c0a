"""Decoding Kubernetes protobuf request bodies (kubectl and Helm send them for typed objects).

kubectl's typed clients (``kubectl create secret|configmap|deployment|namespace``, ``kubectl
run``, ``kubectl auth can-i``) and Helm's release storage post ``application/vnd.kubernetes.
protobuf`` bodies, and do not fall back to JSON on a 415. Rather than ship Kubernetes' .proto
files, this module reads the message descriptors that the kubectl binary itself embeds
(gzipped ``FileDescriptorProto`` s registered by its generated code), caches them as JSON next
to the binary, and decodes bodies generically: the ``k8s\\x00`` envelope (``runtime.Unknown``),
then the object, with the few special types (Time, IntOrString, Quantity, RawExtension, ...)
turned into their JSON forms. Zero-valued strings, booleans and empty objects are dropped,
matching JSON's ``omitempty`` for the fields a typed client fills with defaults.
"""

from __future__ import annotations

import base64
import json
import os
import re
import struct
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

JSON = dict[str, Any]
MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"
# message full name -> field number -> [name, type, type_name, repeated]
Schema = dict[str, dict[int, list[Any]]]

_GZIP = re.compile(b"\x1f\x8b\x08\x00\x00\x00\x00\x00")
_MAP_ENTRIES = "__map_entries__"
_META = ".k8s.io.apimachinery.pkg.apis.meta.v1."
_TYPE_MESSAGE, _TYPE_BYTES, _TYPE_STRING, _TYPE_BOOL = 11, 12, 9, 8


class ProtobufError(Exception):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, raw value) for each field on the wire."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        yield number, wire, value


# reading descriptors out of the kubectl binary


def _descriptor_messages(data: bytes, package: str, schema: Schema, prefix: str) -> None:
    name, fields, nested, map_entry = "", [], [], False
    for number, _, value in _fields(data):
        if number == 1:
            name = value.decode()
        elif number == 2:
            fields.append(value)
        elif number == 3:
            nested.append(value)
        elif number == 7:
            map_entry = any(n == 7 and v for n, _, v in _fields(value))
    full = f"{prefix}.{name}"
    table: dict[int, list[Any]] = {}
    for raw in fields:
        info: dict[int, Any] = {n: v for n, _, v in _fields(raw)}
        field_name = info.get(1, b"").decode()
        type_name = info.get(6, b"").decode()
        table[int(info.get(3, 0))] = [field_name, int(info.get(5, 0)), type_name,
                                      int(info.get(4, 1)) == 3]
    if map_entry:
        table[0] = [_MAP_ENTRIES, 0, "", False]
    schema[full] = table
    for raw in nested:
        _descriptor_messages(raw, package, schema, full)


def extract_schema(binary: Path) -> Schema:
    """Every ``k8s.io`` message embedded in a Go binary's registered descriptors."""
    data = binary.read_bytes()
    schema: Schema = {}
    for match in _GZIP.finditer(data):
        try:
            decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
            raw = decompressor.decompress(data[match.start():match.start() + 4_000_000])
            parsed = list(_fields(raw))
        except (zlib.error, ProtobufError, IndexError):
            continue
        names = [v for n, _, v in parsed if n == 1]
        if not names or not names[0].startswith(b"k8s.io/"):
            continue
        package = next((v.decode() for n, _, v in parsed if n == 2), "")
        for number, _, value in parsed:
            if number == 4:
                _descriptor_messages(value, package, schema, f".{package}")
    return schema


def load_schema(kubectl: Path) -> Schema | None:
    """Descriptors from ``kubectl``, cached in ``<binary>.protobuf.json``; None without kubectl."""
    if not kubectl.is_file():
        return None
    cache = kubectl.with_name(kubectl.name + ".protobuf.json")
    if cache.is_file() and cache.stat().st_mtime >= kubectl.stat().st_mtime:
        raw = json.loads(cache.read_text())
        return {name: {int(k): v for k, v in fields.items()} for name, fields in raw.items()}
    schema = extract_schema(kubectl)
    partial = cache.with_name(f"{cache.name}.{os.getpid()}.partial")
    try:
        partial.write_text(json.dumps(schema, separators=(",", ":")))
        partial.replace(cache)
    except OSError:  # a read-only location (a system kubectl): just do not cache
        partial.unlink(missing_ok=True)
    return schema


# decoding


def _package_candidates(api_version: str) -> list[str]:
    group, _, version = api_version.rpartition("/")
    if not group:
        return [f".k8s.io.api.core.{version}.", _META]
    if group == "meta.k8s.io":
        return [f".k8s.io.apimachinery.pkg.apis.meta.{version}."]
    first = group.split(".")[0]
    return [f".k8s.io.api.{first}.{version}.", _META]


def decode_body(body: bytes, schema: Schema) -> JSON:
    """A ``k8s\\x00``-enveloped object as its JSON form (with apiVersion and kind)."""
    if not body.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf envelope")
    type_meta: dict[int, Any] = {}
    raw = b""
    for number, _, value in _fields(body[len(MAGIC):]):
        if number == 1:
            type_meta = {n: v.decode() for n, _, v in _fields(value)}
        elif number == 2:
            raw = value
    api_version, kind = type_meta.get(1, ""), type_meta.get(2, "")
    for prefix in _package_candidates(api_version):
        if prefix + kind in schema:
            obj = _message(raw, prefix + kind, schema)
            obj = obj if isinstance(obj, dict) else {}
            return {"apiVersion": api_version, "kind": kind, **obj}
    raise ProtobufError(f"no protobuf schema for {api_version} {kind}")


def _scalar(kind: int, wire: int, value: Any) -> Any:
    if wire == 0:
        if kind == _TYPE_BOOL:
            return bool(value)
        if kind in (3, 5) and value >= 1 << 63:
            return value - (1 << 64)
        if kind in (17, 18):
            return (value >> 1) ^ -(value & 1)
        return value
    if wire == 1:
        fmt = "<d" if kind == 1 else ("<q" if kind == 16 else "<Q")
        return struct.unpack(fmt, value)[0]
    if wire == 5:
        return struct.unpack("<f" if kind == 2 else ("<i" if kind == 15 else "<I"), value)[0]
    if kind == _TYPE_STRING:
        return value.decode("utf-8")
    return base64.b64encode(value).decode()


def _special(type_name: str, fields: dict[int, Any]) -> tuple[bool, Any]:
    short = type_name.rsplit(".", 1)[-1]
    if type_name in (_META + "Time", _META + "MicroTime"):
        seconds, nanos = fields.get(1, 0), fields.get(2, 0)
        if not seconds and not nanos:
            return True, None
        stamp = datetime.fromtimestamp(seconds, UTC)
        if short == "MicroTime":
            return True, stamp.replace(microsecond=nanos // 1000).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return True, stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    if type_name.endswith("intstr.IntOrString"):
        return True, fields.get(3, b"").decode() if fields.get(1) == 1 else fields.get(2, 0)
    if type_name.endswith("resource.Quantity"):
        return True, fields.get(1, b"").decode()
    if short in ("RawExtension", "FieldsV1", "JSON") and 1 in fields:
        raw = fields[1]
        return True, json.loads(raw) if raw else None
    if type_name == _META + "Duration":
        return True, f"{fields.get(1, 0) / 1e9:g}s"
    return False, None


def _message(data: bytes, type_name: str, schema: Schema) -> Any:
    table = schema.get(type_name, {})
    raw_fields: dict[int, Any] = {}
    out: JSON = {}
    for number, wire, value in _fields(data):
        raw_fields.setdefault(number, value)
        spec = table.get(number)
        if spec is None:
            continue
        name, kind, sub_type, repeated = spec
        sub_table = schema.get(sub_type, {})
        if kind == _TYPE_MESSAGE and sub_table.get(0, [None])[0] == _MAP_ENTRIES:
            entry = _message(value, sub_type, schema)
            if isinstance(entry, dict):
                out.setdefault(name, {})[entry.get("key", "")] = entry.get("value")
            continue
        if kind == _TYPE_MESSAGE:
            item = _message(value, sub_type, schema)
        elif wire == 2 and repeated and kind not in (_TYPE_STRING, _TYPE_BYTES):
            out.setdefault(name, []).extend(_packed(kind, value))
            continue
        else:
            item = _scalar(kind, wire, value)
        if repeated:
            out.setdefault(name, []).append(item)
        else:
            out[name] = item
    handled, special = _special(type_name, raw_fields)
    if handled:
        return special
    if 0 in table:  # a map entry: keep empty values
        return out
    return {k: v for k, v in out.items() if v not in ("", False, None, {})}


def _packed(kind: int, data: bytes) -> list[Any]:
    out, pos = [], 0
    while pos < len(data):
        value, pos = _varint(data, pos)
        out.append(_scalar(kind, 0, value))
    return out

"""Decoding Kubernetes protobuf request bodies (kubectl and Helm send them for typed objects).

kubectl's typed clients (``kubectl create secret|configmap|deployment|namespace``, ``kubectl
run``, ``kubectl auth can-i``) and Helm's release storage post ``application/vnd.kubernetes.
protobuf`` bodies, and do not fall back to JSON on a 415. Rather than ship Kubernetes' .proto
files, this module takes the message descriptors that the kubectl binary itself embeds (gzipped
``FileDescriptorProto`` s registered by its generated code), loads them into a ``protobuf``
descriptor pool, and lets ``protobuf``'s message factory parse bodies: the ``k8s\\x00`` envelope
(``runtime.Unknown``), then the object. The parsed message becomes its JSON form here, with the
few special types (Time, IntOrString, Quantity, RawExtension, ...) in their JSON forms.
Zero-valued strings, numbers, booleans and empty objects are dropped, matching JSON's
``omitempty`` for the fields a typed client fills with defaults.
"""

from __future__ import annotations

import base64
import json
import re
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

JSON = dict[str, Any]
MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"
Schema = descriptor_pool.DescriptorPool

_GZIP = re.compile(b"\x1f\x8b\x08\x00\x00\x00\x00\x00")
_META = "k8s.io.apimachinery.pkg.apis.meta.v1."
_UNKNOWN = "k8s.io.apimachinery.pkg.runtime.Unknown"


class ProtobufError(Exception):
    pass


# reading descriptors out of the kubectl binary


def _embedded_files(data: bytes) -> Iterator[descriptor_pb2.FileDescriptorProto]:
    """The gzipped ``k8s.io`` file descriptors a Go binary registers."""
    for match in _GZIP.finditer(data):
        try:
            decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
            raw = decompressor.decompress(data[match.start() : match.start() + 4_000_000])
            file = descriptor_pb2.FileDescriptorProto.FromString(raw)
        except (zlib.error, DecodeError):
            continue
        if file.name.startswith("k8s.io/"):
            yield file


def extract_schema(binary: Path) -> Schema:
    """A descriptor pool with every ``k8s.io`` file embedded in a Go binary.

    Imports the binary does not embed (``gogo.proto``, which only declares field options) are
    added as empty files, and each file after the files it imports.
    """
    files = {file.name: file for file in _embedded_files(binary.read_bytes())}
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(name: str) -> None:
        if name in added:
            return
        added.add(name)
        file = files.get(name) or descriptor_pb2.FileDescriptorProto(name=name)
        for dependency in file.dependency:
            add(dependency)
        pool.Add(file)

    for name in sorted(files):
        add(name)
    return pool


def load_schema(kubectl: Path) -> Schema | None:
    """Descriptors from ``kubectl`` (a fraction of a second to read); None without kubectl."""
    if not kubectl.is_file():
        return None
    return extract_schema(kubectl)


# decoding


def _package_candidates(api_version: str) -> list[str]:
    group, _, version = api_version.rpartition("/")
    if not group:
        return [f"k8s.io.api.core.{version}.", _META]
    if group == "meta.k8s.io":
        return [f"k8s.io.apimachinery.pkg.apis.meta.{version}."]
    first = group.split(".")[0]
    return [f"k8s.io.api.{first}.{version}.", _META]


def _parse(schema: Schema, name: str, raw: bytes) -> Message:
    cls = message_factory.GetMessageClass(schema.FindMessageTypeByName(name))
    try:
        return cls.FromString(raw)
    except DecodeError as exc:
        raise ProtobufError(str(exc)) from exc


def _find(schema: Schema, name: str) -> Descriptor | None:
    try:
        return schema.FindMessageTypeByName(name)
    except KeyError:
        return None


def decode_body(body: bytes, schema: Schema) -> JSON:
    """A ``k8s\\x00``-enveloped object as its JSON form (with apiVersion and kind)."""
    if not body.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf envelope")
    if _find(schema, _UNKNOWN) is None:
        raise ProtobufError("no protobuf schema for runtime.Unknown")
    envelope: Any = _parse(schema, _UNKNOWN, body[len(MAGIC) :])
    api_version, kind = envelope.typeMeta.apiVersion, envelope.typeMeta.kind
    for prefix in _package_candidates(api_version):
        if _find(schema, prefix + kind) is not None:
            obj = _to_json(_parse(schema, prefix + kind, envelope.raw))
            obj = obj if isinstance(obj, dict) else {}
            return {"apiVersion": api_version, "kind": kind, **obj}
    raise ProtobufError(f"no protobuf schema for {api_version} {kind}")


def _time(message: Any, micro: bool) -> str | None:
    if not message.seconds and not message.nanos:
        return None
    stamp = datetime.fromtimestamp(message.seconds, UTC)
    if micro:
        return stamp.replace(microsecond=message.nanos // 1000).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def _special(message: Any) -> tuple[bool, Any]:
    """The JSON form of the types that do not marshal as objects, by their full name."""
    name = message.DESCRIPTOR.full_name
    short = name.rsplit(".", 1)[-1]
    if name in (_META + "Time", _META + "MicroTime"):
        return True, _time(message, micro=short == "MicroTime")
    if name.endswith("intstr.IntOrString"):
        return True, message.strVal if message.type == 1 else message.intVal
    if name.endswith("resource.Quantity"):
        return True, message.string
    if short in ("RawExtension", "FieldsV1", "JSON"):
        raw_field = message.DESCRIPTOR.fields_by_number.get(1)
        if raw_field is not None and message.HasField(raw_field.name):
            raw = getattr(message, raw_field.name)
            return True, json.loads(raw) if raw else None
    if name == _META + "Duration":
        return True, f"{message.duration / 1e9:g}s"
    return False, None


def _value(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return _to_json(value)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode()
    return value


def _to_json(message: Message) -> Any:
    handled, special = _special(message)
    if handled:
        return special
    out: JSON = {}
    for field, value in message.ListFields():
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            value_field = entry.fields_by_name["value"]
            out[field.name] = {key: _value(value_field, item) for key, item in value.items()}
        elif field.is_repeated:
            out[field.name] = [_value(field, item) for item in value]
        else:
            out[field.name] = _value(field, value)
    return {k: v for k, v in out.items() if v not in ("", False, None, {})}

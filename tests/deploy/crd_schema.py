"""Turn a CustomResourceDefinition's openAPIV3Schema into a JSON Schema that validates like the API server.

The API server prunes or rejects fields a structural schema does not declare, so every object with
declared `properties` forbids others unless it says `x-kubernetes-preserve-unknown-fields`.
`x-kubernetes-int-or-string` becomes integer-or-string; int32/int64 formats get their ranges;
`x-kubernetes-list-type: set` means unique items. `metadata` is only `type: object` in a CRD (the
API server checks ObjectMeta itself), so a minimal ObjectMeta schema is added: string label and
annotation values (a number there is a classic Helm bug) and a DNS-1035 name.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
# Keywords whose value is one schema, a list of schemas, or a map of name -> schema.
ONE_SCHEMA = ("items", "not", "additionalProperties")
SCHEMA_LISTS = ("anyOf", "allOf", "oneOf")
SCHEMA_MAPS = ("properties",)

OBJECT_META = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 63}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def convert(node: dict[str, Any]) -> dict[str, Any]:
    """One OpenAPI v3 (structural) schema node -> JSON Schema."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-"):
            continue
        if key in ONE_SCHEMA and isinstance(value, dict):
            out[key] = convert(value)
        elif key in SCHEMA_LISTS:
            out[key] = [convert(v) for v in value]
        elif key in SCHEMA_MAPS:
            out[key] = {name: convert(v) for name, v in value.items()}
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("nullable"):
        out.pop("nullable")
        if "type" in out:
            out["type"] = [out["type"], "null"]
    if node.get("format") in INT_RANGES and node.get("type") == "integer":
        out["minimum"], out["maximum"] = INT_RANGES[node["format"]]
    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    preserve = node.get("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in node and "additionalProperties" not in node and not preserve:
        out["additionalProperties"] = False
    return out


def crd_json_schema(crd: dict[str, Any], version: str) -> dict[str, Any]:
    """JSON Schema for one served version of a CRD, for a whole object (apiVersion, kind, metadata...)."""
    (ver,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = convert(ver["schema"]["openAPIV3Schema"])
    props = schema.setdefault("properties", {})
    props["apiVersion"] = {"const": f"{crd['spec']['group']}/{version}"}
    props["kind"] = {"const": crd["spec"]["names"]["kind"]}
    props["metadata"] = OBJECT_META
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata", "spec"})
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


@cache
def load_crd_schema(path: Path, version: str = "v1beta1") -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRD is 2 MB: the C loader is 10x faster
    with path.open() as f:
        crd = yaml.load(f, Loader=loader)
    return crd_json_schema(crd, version)

"""Offline validation of Kubernetes objects: built-in kinds with kubernetes-validate (strict),
custom resources (Strimzi, spark-operator, prometheus-operator, KEDA) against the openAPIV3Schema of
their CRD in ../shared/crds (made strict too)."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from .chart import CRDS

# Strimzi 1.2 needs Kubernetes >= 1.30; check the oldest we support and a current one.
KUBERNETES_VERSIONS = ("1.30.0", "1.33.0")
CUSTOM_GROUPS = ("kafka.strimzi.io", "sparkoperator.k8s.io", "monitoring.coreos.com", "keda.sh")


def is_custom(obj: dict[str, Any]) -> bool:
    return str(obj.get("apiVersion", "")).split("/")[0] in CUSTOM_GROUPS


def name_of(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def validate_builtin(obj: dict[str, Any]) -> None:
    """Raise kubernetes_validate.ValidationError for unknown fields or wrong types."""
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


@functools.cache
def _crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> strict JSON schema, for every served version of every CRD file."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(Path(CRDS).glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                if version.get("served"):
                    schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
                    schemas[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = schema
    return schemas


def _strict(node: Any) -> Any:
    """Reject unknown fields like the API server's strict field validation (`kubectl --validate=strict`)."""
    if isinstance(node, dict):
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for value in node.values():
            _strict(value)
    elif isinstance(node, list):
        for item in node:
            _strict(item)
    return node


def validate_custom(obj: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError, or KeyError when no served CRD version matches."""
    key = (obj["apiVersion"], obj["kind"])
    schemas = _crd_schemas()
    if key not in schemas:
        served = sorted(k for k in schemas if k[1] == obj["kind"])
        raise KeyError(f"{name_of(obj)}: {obj['apiVersion']} is not served by the CRDs in {CRDS} (served: {served})")
    jsonschema.Draft7Validator(schemas[key]).validate(obj)


def validate(obj: dict[str, Any]) -> None:
    if is_custom(obj):
        validate_custom(obj)
    else:
        validate_builtin(obj)

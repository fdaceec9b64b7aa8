"""A small Kustomize renderer for the features deploy/kubernetes uses, so the suite renders
the manifests without a kubectl binary: ``resources`` (files and directories), ``namespace``,
``labels`` (metadata only, as ``includeSelectors: false``), ``images``, ``replicas`` and
inline JSON 6902 ``patches``. Anything else in a kustomization is refused, so a feature
added to the manifests cannot be silently ignored here. Where kubectl is installed the test
compares this rendering with ``kubectl kustomize``."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Doc = dict[str, Any]
KNOWN = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "replicas", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def render(directory: Path) -> list[Doc]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KNOWN
    if unknown:
        raise ValueError(f"{directory}: kustomization fields this renderer does not implement: {sorted(unknown)}")
    docs: list[Doc] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            docs += render(path)
        else:
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for spec in kustomization.get("labels", []):
        if spec.get("includeSelectors") or spec.get("includeTemplates"):
            raise ValueError("labels: only includeSelectors/includeTemplates false are implemented")
        for doc in docs:
            doc.setdefault("metadata", {}).setdefault("labels", {}).update(spec["pairs"])
    if "namespace" in kustomization:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = kustomization["namespace"]
    for image in kustomization.get("images", []):
        for container in _containers(docs):
            name, _, _tag = container["image"].partition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', _tag)}"
    for replicas in kustomization.get("replicas", []):
        for doc in docs:
            if doc["kind"] in ("Deployment", "StatefulSet") and doc["metadata"]["name"] == replicas["name"]:
                doc["spec"]["replicas"] = replicas["count"]
    for patch in kustomization.get("patches", []):
        target = patch["target"]
        matched = [d for d in docs if d["kind"] == target["kind"] and d["metadata"]["name"] == target["name"]]
        if not matched:
            raise ValueError(f"patch target {target} matches nothing")
        for doc in matched:
            for op in yaml.safe_load(patch["patch"]):
                _apply(doc, op)
    return docs


def _containers(docs: list[Doc]) -> list[Doc]:
    out = []
    for doc in docs:
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        out += pod.get("containers", []) + pod.get("initContainers", [])
    return out


def _apply(doc: Doc, op: Doc) -> None:
    """One JSON patch operation (RFC 6902): add, replace, remove."""
    parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
    parent: Any = doc
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
    last = parts[-1]
    if op["op"] in ("add", "replace"):
        value = copy.deepcopy(op["value"])
        if isinstance(parent, list):
            if last == "-":
                parent.append(value)
            elif op["op"] == "add":
                parent.insert(int(last), value)
            else:
                parent[int(last)] = value
        else:
            if op["op"] == "replace" and last not in parent:
                raise KeyError(f"replace: {op['path']} does not exist")
            parent[last] = value
    elif op["op"] == "remove":
        del parent[int(last) if isinstance(parent, list) else last]
    else:
        raise ValueError(f"patch op {op['op']} is not implemented")

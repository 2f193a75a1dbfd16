"""A small, strict re-implementation of the kustomize features deploy/kubernetes uses.

CI has no kubectl, so the deploy tests render the kustomizations with this.
Only these fields are understood; anything else in a kustomization raises
UnsupportedKustomization, so a new feature in deploy/ cannot be silently
ignored by the tests:

  Kustomization: apiVersion, kind, resources (files or directories),
                 components, namespace, labels (pairs, no selectors/templates),
                 images (name/newName/newTag/digest), secretGenerator (files,
                 literals, type, namespace; name hash disabled), generatorOptions
                 (disableNameSuffixHash: true only), patches (JSON 6902 only)
  Component:     apiVersion, kind, resources, patches

When kubectl is available, test_manifests.py also compares this renderer's
output with `kubectl kustomize`.
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")

# Kinds kustomize leaves without a namespace (the ones deploy/ uses, and a
# few neighbours so a future addition is handled correctly).
CLUSTER_SCOPED_KINDS = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "PriorityClass",
    "CustomResourceDefinition",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "StorageClass",
    "PersistentVolume",
    "ClusterIssuer",
    "APIService",
    "RuntimeClass",
}

KUSTOMIZATION_KEYS = {
    "apiVersion",
    "kind",
    "resources",
    "components",
    "namespace",
    "labels",
    "images",
    "secretGenerator",
    "generatorOptions",
    "patches",
}
COMPONENT_KEYS = {"apiVersion", "kind", "resources", "patches"}


class UnsupportedKustomization(Exception):
    """The kustomization uses something this renderer does not implement."""


class KustomizeError(Exception):
    """The kustomization is invalid (missing file, failing patch, ...)."""


def find_kustomization(directory: Path) -> Path:
    for name in KUSTOMIZATION_FILES:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    raise KustomizeError(f"no kustomization file in {directory}")


def load_yaml_documents(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        docs = [doc for doc in yaml.safe_load_all(handle) if doc is not None]
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            raise KustomizeError(f"{path}: every document must be a Kubernetes object")
    return docs


def object_id(obj: dict) -> tuple[str, str, str, str]:
    meta = obj.get("metadata", {})
    return (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])


def render(directory: Path | str) -> list[dict]:
    """Render the kustomization in `directory` and return its objects."""
    return _build(Path(directory).resolve(), expect_kind="Kustomization")


def files_used(directory: Path | str) -> set[Path]:
    """Every file a kustomization (recursively) reads: kustomization files,
    resources, component files, generator sources, patch files."""
    used: set[Path] = set()
    _collect_files(Path(directory).resolve(), used)
    return used


def _collect_files(directory: Path, used: set[Path]) -> None:
    kfile = find_kustomization(directory)
    used.add(kfile)
    spec = yaml.safe_load(kfile.read_text(encoding="utf-8")) or {}
    for entry in spec.get("resources", []) + spec.get("components", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            _collect_files(path, used)
        else:
            used.add(path)
    for generator in spec.get("secretGenerator", []):
        for source in generator.get("files", []):
            used.add((directory / source.split("=", 1)[-1]).resolve())
    for patch in spec.get("patches", []):
        if "path" in patch:
            used.add((directory / patch["path"]).resolve())


def _build(directory: Path, expect_kind: str) -> list[dict]:
    kfile = find_kustomization(directory)
    spec = yaml.safe_load(kfile.read_text(encoding="utf-8")) or {}
    kind = spec.get("kind", "Kustomization")
    if kind != expect_kind:
        raise KustomizeError(f"{kfile}: expected kind {expect_kind}, found {kind}")
    allowed = KUSTOMIZATION_KEYS if kind == "Kustomization" else COMPONENT_KEYS
    unknown = set(spec) - allowed
    if unknown:
        raise UnsupportedKustomization(f"{kfile}: unsupported fields {sorted(unknown)}")

    objects: list[dict] = []
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            objects.extend(_build(path, expect_kind="Kustomization"))
        elif path.is_file():
            objects.extend(copy.deepcopy(load_yaml_documents(path)))
        else:
            raise KustomizeError(f"{kfile}: resource {entry} does not exist")

    # Components run against what has been accumulated so far: they can add
    # resources and patch the parent's.
    for entry in spec.get("components", []):
        component_dir = (directory / entry).resolve()
        if not component_dir.is_dir():
            raise KustomizeError(f"{kfile}: component {entry} is not a directory")
        comp_spec = yaml.safe_load(find_kustomization(component_dir).read_text()) or {}
        added = _build_component_resources(component_dir, comp_spec)
        objects.extend(added)
        objects = _apply_patches(component_dir, comp_spec.get("patches", []), objects)

    objects.extend(_generate_secrets(directory, spec))

    if "namespace" in spec:
        _set_namespace(objects, spec["namespace"])
    for label_set in spec.get("labels", []):
        _apply_labels(kfile, objects, label_set)
    for image in spec.get("images", []):
        _apply_image(kfile, objects, image)
    objects = _apply_patches(directory, spec.get("patches", []), objects)

    seen: set[tuple] = set()
    for obj in objects:
        oid = object_id(obj)
        if oid in seen:
            raise KustomizeError(f"{kfile}: duplicate object {oid}")
        seen.add(oid)
    return objects


def _build_component_resources(component_dir: Path, spec: dict) -> list[dict]:
    kfile = find_kustomization(component_dir)
    if spec.get("kind") != "Component":
        raise KustomizeError(f"{kfile}: a component must have kind Component")
    unknown = set(spec) - COMPONENT_KEYS
    if unknown:
        raise UnsupportedKustomization(f"{kfile}: unsupported fields {sorted(unknown)}")
    objects: list[dict] = []
    for entry in spec.get("resources", []):
        path = (component_dir / entry).resolve()
        if not path.is_file():
            raise KustomizeError(f"{kfile}: resource {entry} does not exist")
        objects.extend(copy.deepcopy(load_yaml_documents(path)))
    return objects


def _generate_secrets(directory: Path, spec: dict) -> list[dict]:
    generators = spec.get("secretGenerator", [])
    if not generators:
        return []
    options = spec.get("generatorOptions", {})
    if set(options) - {"disableNameSuffixHash"} or options.get("disableNameSuffixHash") is not True:
        raise UnsupportedKustomization(
            "secretGenerator needs generatorOptions.disableNameSuffixHash: true "
            "(name hashes and the reference rewriting they need are not implemented)"
        )
    secrets = []
    for gen in generators:
        unknown = set(gen) - {"name", "namespace", "type", "files", "literals"}
        if unknown:
            raise UnsupportedKustomization(f"secretGenerator {gen.get('name')}: {sorted(unknown)}")
        data: dict[str, str] = {}
        for source in gen.get("files", []):
            key, _, rel = source.partition("=")
            if not rel:
                key, rel = Path(source).name, source
            path = directory / rel
            if not path.is_file():
                raise KustomizeError(f"secretGenerator {gen['name']}: file {rel} does not exist")
            data[key] = base64.b64encode(path.read_bytes()).decode("ascii")
        for literal in gen.get("literals", []):
            key, _, value = literal.partition("=")
            data[key] = base64.b64encode(value.encode()).decode("ascii")
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": gen["name"]},
            "type": gen.get("type", "Opaque"),
            "data": data,
        }
        if "namespace" in gen:
            secret["metadata"]["namespace"] = gen["namespace"]
        secrets.append(secret)
    return secrets


def _set_namespace(objects: list[dict], namespace: str) -> None:
    for obj in objects:
        if obj["kind"] in CLUSTER_SCOPED_KINDS:
            continue
        obj.setdefault("metadata", {})["namespace"] = namespace


def _apply_labels(kfile: Path, objects: list[dict], label_set: dict) -> None:
    unknown = set(label_set) - {"pairs", "includeSelectors", "includeTemplates"}
    if unknown or label_set.get("includeSelectors") or label_set.get("includeTemplates"):
        raise UnsupportedKustomization(
            f"{kfile}: labels supports only 'pairs' (no selectors or templates)"
        )
    for obj in objects:
        labels = obj.setdefault("metadata", {}).setdefault("labels", {})
        labels.update(label_set["pairs"])


def _pod_specs(obj: dict) -> list[dict]:
    spec = obj.get("spec", {})
    if obj["kind"] == "Pod":
        return [spec]
    if obj["kind"] == "CronJob":
        return [spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})]
    template = spec.get("template", {})
    return [template["spec"]] if "spec" in template else []


def _apply_image(kfile: Path, objects: list[dict], image: dict) -> None:
    unknown = set(image) - {"name", "newName", "newTag", "digest"}
    if unknown:
        raise UnsupportedKustomization(f"{kfile}: images fields {sorted(unknown)}")
    for obj in objects:
        for pod_spec in _pod_specs(obj):
            for container in pod_spec.get("containers", []) + pod_spec.get("initContainers", []):
                ref = container.get("image", "")
                name = ref.split("@", 1)[0]
                tag = None
                if ":" in name.rsplit("/", 1)[-1]:
                    name, tag = name.rsplit(":", 1)
                if name != image["name"]:
                    continue
                new = image.get("newName", name)
                if "digest" in image:
                    new += "@" + image["digest"]
                elif "newTag" in image:
                    new += ":" + str(image["newTag"])
                elif tag:
                    new += ":" + tag
                container["image"] = new


def _matches_target(obj: dict, target: dict) -> bool:
    unknown = set(target) - {"group", "version", "kind", "name", "namespace"}
    if unknown:
        raise UnsupportedKustomization(f"patch target fields {sorted(unknown)}")
    group, _, version = obj["apiVersion"].rpartition("/")
    if "group" in target and target["group"] != group:
        return False
    if "version" in target and target["version"] != version:
        return False
    if "kind" in target and target["kind"] != obj["kind"]:
        return False
    meta = obj.get("metadata", {})
    if "name" in target and target["name"] != meta.get("name"):
        return False
    if "namespace" in target and target["namespace"] != meta.get("namespace"):
        return False
    return True


def _apply_patches(directory: Path, patches: list[dict], objects: list[dict]) -> list[dict]:
    for patch in patches:
        unknown = set(patch) - {"target", "patch", "path"}
        if unknown:
            raise UnsupportedKustomization(f"patch fields {sorted(unknown)}")
        text = patch["patch"] if "patch" in patch else (directory / patch["path"]).read_text()
        ops = yaml.safe_load(text)
        if not isinstance(ops, list):
            raise UnsupportedKustomization("only JSON 6902 patches (a list of operations) are supported")
        if "target" not in patch:
            raise UnsupportedKustomization("a JSON 6902 patch needs a target")
        hits = [obj for obj in objects if _matches_target(obj, patch["target"])]
        if not hits:
            raise KustomizeError(f"patch target {patch['target']} matches nothing")
        for obj in hits:
            for op in ops:
                json6902(obj, op)
    return objects


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise KustomizeError(f"bad JSON pointer {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path.split("/")[1:]]


def _walk(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(doc, list):
            doc = doc[int(part)]
        elif isinstance(doc, dict):
            if part not in doc:
                raise KustomizeError(f"path element {part!r} not found")
            doc = doc[part]
        else:
            raise KustomizeError(f"cannot descend into {type(doc).__name__} at {part!r}")
    return doc


def json6902(doc: dict, op: dict) -> None:
    """Apply one RFC 6902 operation (add, replace, remove, test) in place."""
    kind = op.get("op")
    parts = _pointer(op["path"])
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    try:
        if kind == "test":
            current = _walk(parent, [last])
            if current != op["value"]:
                raise KustomizeError(f"test failed at {op['path']}: {current!r} != {op['value']!r}")
        elif kind == "add":
            value = copy.deepcopy(op["value"])
            if isinstance(parent, list):
                if last == "-":
                    parent.append(value)
                else:
                    parent.insert(int(last), value)
            else:
                parent[last] = value
        elif kind == "replace":
            _walk(parent, [last])  # must exist
            if isinstance(parent, list):
                parent[int(last)] = copy.deepcopy(op["value"])
            else:
                parent[last] = copy.deepcopy(op["value"])
        elif kind == "remove":
            _walk(parent, [last])
            if isinstance(parent, list):
                del parent[int(last)]
            else:
                del parent[last]
        else:
            raise UnsupportedKustomization(f"JSON 6902 op {kind!r}")
    except (IndexError, ValueError, TypeError) as exc:
        raise KustomizeError(f"patch {json.dumps(op)} failed: {exc}") from exc

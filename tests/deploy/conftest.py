"""Shared paths and fixtures for the deploy/ tests (run: python3 -m pytest tests/deploy)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # tests/: ward_testdata, where testdata/ is

import kustomize_lite  # noqa: E402

REPO = HERE.parents[1]  # tests/deploy -> tests -> repo root
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
BASE = KUBERNETES / "base"
PRODUCTION = KUBERNETES / "overlays" / "production"
COMPONENTS = KUBERNETES / "components"
AUDIT_POLICY = DEPLOY / "audit" / "audit-policy.yaml"
RULES_BUILTIN = REPO / "rules" / "builtin"


def write_placeholder_secrets(overlay: Path) -> None:
    """What the operator does before installing: create the secret files from
    the examples. The tests use the example (placeholder) values."""
    secrets = overlay / "secrets"
    for example in secrets.glob("*.example"):
        shutil.copyfile(example, secrets / example.name[: -len(".example")])


@pytest.fixture(scope="session")
def kubernetes_copy(tmp_path_factory) -> Path:
    """deploy/kubernetes copied to a temporary directory with the operator's
    secret files created from the examples, so the real tree is never touched."""
    root = tmp_path_factory.mktemp("deploy") / "kubernetes"
    shutil.copytree(KUBERNETES, root)
    write_placeholder_secrets(root / "overlays" / "production")
    return root


@pytest.fixture(scope="session")
def rendered_base() -> list[dict]:
    return kustomize_lite.render(BASE)


@pytest.fixture(scope="session")
def rendered_production(kubernetes_copy) -> list[dict]:
    return kustomize_lite.render(kubernetes_copy / "overlays" / "production")


@pytest.fixture(scope="session")
def rendered_all(kubernetes_copy) -> dict[str, list[dict]]:
    """Every kustomization we ship, rendered. Components are rendered through
    a throwaway overlay that adds them to the base."""
    out = {
        "base": kustomize_lite.render(kubernetes_copy / "base"),
        "overlays/production": kustomize_lite.render(kubernetes_copy / "overlays" / "production"),
    }
    for component in sorted(p for p in (kubernetes_copy / "components").iterdir() if p.is_dir()):
        overlay = kubernetes_copy / "overlays" / f"test-{component.name}"
        overlay.mkdir(exist_ok=True)
        (overlay / "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            f"resources: [../../base]\ncomponents: [../../components/{component.name}]\n"
        )
        out[f"components/{component.name}"] = kustomize_lite.render(overlay)
    return out

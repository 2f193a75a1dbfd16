"""Static lint of deploy/Dockerfile (no Docker engine runs on the CI machine,
so the image is not built here; these checks pin down its shape)."""

from __future__ import annotations

import json
import re

import pytest

from conftest import DEPLOY, REPO

DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        current += " " + (stripped[:-1].rstrip() if stripped.endswith("\\") else stripped)
        if not stripped.endswith("\\"):
            keyword, _, args = current.strip().partition(" ")
            out.append((keyword.upper(), args.strip()))
            current = ""
    return out


def stages(text: str) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    args = {}
    for keyword, rest in instructions(text):
        if keyword == "ARG" and not result:
            name, _, default = rest.partition("=")
            args[name] = default
            continue
        if keyword == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), rest)
            result.append([("FROM", image)])
        elif result:
            result[-1].append((keyword, rest))
    return result


@pytest.fixture(scope="module")
def parsed():
    return stages(DOCKERFILE.read_text())


def test_multi_stage_rust_builder_distroless_runtime(parsed):
    assert len(parsed) >= 2
    builder_image, _, builder_name = parsed[0][0][1].partition(" AS ")
    assert re.fullmatch(r"rust:1(\.\d+)*-bookworm(@sha256:[0-9a-f]{64})?", builder_image.strip()), builder_image
    runtime = parsed[-1][0][1]
    assert re.fullmatch(r"gcr\.io/distroless/(static|cc)-debian12:nonroot(@sha256:[0-9a-f]{64})?", runtime), runtime
    assert builder_name.strip() == "builder"


def test_builder_builds_locked_release_binary(parsed):
    runs = " ".join(args for kw, args in parsed[0] if kw == "RUN")
    assert "cargo build" in runs and "--release" in runs and "--locked" in runs
    assert "--bin ward" in runs


def test_final_stage_has_no_shell_steps_and_only_the_binary(parsed):
    final = parsed[-1]
    keywords = [kw for kw, _ in final]
    # No RUN: the runtime image has no shell to run it with, and adding one
    # would defeat the point.
    assert "RUN" not in keywords
    assert "ADD" not in keywords  # no remote or archive magic
    copies = [args for kw, args in final if kw == "COPY"]
    assert len(copies) == 1 and "--from=builder" in copies[0], copies
    assert copies[0].split()[-2:] == ["/out/ward", "/usr/local/bin/ward"]
    # Nothing in the final stage references a shell.
    assert not re.search(r"\b(/bin/sh|bash|apt-get|apk)\b", " ".join(a for _, a in final))


def test_runs_as_numeric_non_root_user(parsed):
    users = [args for kw, args in parsed[-1] if kw == "USER"]
    assert users, "final stage must set USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) == 65532, "numeric uid so runAsNonRoot can verify it"


def test_entrypoint_is_exec_form(parsed):
    entry = [args for kw, args in parsed[-1] if kw == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["/usr/local/bin/ward"]
    for kw, args in parsed[-1]:
        if kw == "CMD":
            assert isinstance(json.loads(args), list), "CMD in exec form: no shell"


def test_no_secrets_or_healthcheck_in_image(parsed):
    for kw, args in (step for stage in parsed for step in stage):
        assert kw not in ("ENV",) or not re.search(r"(TOKEN|PASSWORD|SECRET|KEY)=", args, re.I), args
        assert "--mount=type=secret" not in args or kw == "RUN"


def test_dockerignore_keeps_context_small_and_clean():
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for needed in (".git", "**/target", "deploy/kubernetes/overlays/*/secrets"):
        assert needed in patterns, needed
    # Never exclude what the build needs.
    for kept in ("Cargo.toml", "Cargo.lock", "web", "rules"):
        assert kept not in patterns, kept
    assert (REPO / "Cargo.lock").is_file()


def test_instruction_parser():
    text = "ARG A=x:1\nFROM ${A} AS b\nRUN one \\\n  two\n# c\nFROM scratch\nUSER 1:1\n"
    assert stages(text) == [[("FROM", "x:1 AS b"), ("RUN", "one two")], [("FROM", "scratch"), ("USER", "1:1")]]

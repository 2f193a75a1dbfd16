"""A live `ward indexer` for the API tests (run: python3 -m pytest tests/api).

The session starts the real binary on free loopback ports, with a temporary
data directory and a tokens file, loads the fixture corpora through the
audit webhook endpoint, and kills the process at the end. The binary is
`$WARD_BIN`, else `$CARGO_TARGET_DIR/debug/ward`, else `target/debug/ward`
(build it first: `cargo build -p ward --locked`).

Every fixture event gets a fresh `auditID` naming its corpus and line
(`panther-L12`): Panther's test events mostly have none and Falco's traces
repeat ids across stages, so the original ids cannot tell events apart.
The rewritten corpora are kept on disk, and the rule engine
(`ward rules test`) reads exactly those files, so both sides see the same
events.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]  # tests/api -> tests -> repo root
sys.path.insert(0, str(HERE.parent))  # tests/: ward_testdata, where testdata/ is

import ward_testdata  # noqa: E402

# One token per role the tests use; the labels name them in the audit trail.
TOKENS = {
    "admin": "admin/pytest-admin:adm-0123456789abcdef",
    "viewer": "viewer/pytest-viewer:view-0123456789abcdef",
}

# (short name, path under testdata/): the corpora EXPECTED_SIGMA_HITS.txt covers.
CORPORA = [
    ("falco", "falco-traces/falco_k8s_audit_traces.jsonl"),
    ("panther", "panther-k8s/panther_k8s_audit_events.jsonl"),
    ("audit2rbac", "audit2rbac/demo.log"),
]


def ward_bin() -> Path:
    if os.environ.get("WARD_BIN"):
        return Path(os.environ["WARD_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    if not target.is_absolute():
        target = REPO / target
    return target / "debug" / "ward"


def token(role: str) -> str:
    return TOKENS[role].rsplit(":", 1)[1]


def auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(role)}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Corpus:
    name: str
    path: Path  # the rewritten copy, one event per line
    audit_ids: list[str]  # by line, 1-based line n at index n-1


@dataclass
class Server:
    base: str
    process: subprocess.Popen
    log: Path
    corpora: list[Corpus]

    def get(self, path: str, role: str = "admin", **params) -> requests.Response:
        return requests.get(self.base + path, params=params, headers=auth(role), timeout=60)

    def search_ids(self, q: str) -> set[str]:
        """auditIDs of every hit of `q` over all time, following cursors."""
        ids: set[str] = set()
        cursor = None
        while True:
            params = {"q": q, "limit": "1000", "order": "oldest"}
            if cursor:
                params["cursor"] = cursor
            r = self.get("/api/v1/search", **params)
            assert r.status_code == 200, f"{q}: {r.status_code} {r.text}"
            body = r.json()
            ids.update(h["auditID"] for h in body["hits"] if "auditID" in h)
            cursor = body.get("cursor")
            if not cursor or not body["hits"]:
                return ids


# Values Sigma matches case-insensitively; the "shouting" corpus has them in
# upper case, so that both sides are held to the same case rules.
SHOUTED = [
    ("verb",),
    ("objectRef", "resource"),
    ("objectRef", "subresource"),
    ("objectRef", "namespace"),
    ("objectRef", "apiGroup"),
    ("requestURI",),
    ("userAgent",),
]


def shout(event: dict) -> dict:
    for path in SHOUTED:
        parent = event
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and isinstance(parent.get(path[-1]), str):
            parent[path[-1]] = parent[path[-1]].upper()
    return event


def rewrite_corpora(out: Path) -> list[Corpus]:
    corpora = []
    sources = [(name, ward_testdata.fixtures() / rel, False) for name, rel in CORPORA]
    sources += [("shouting", ward_testdata.fixtures() / rel, True) for _, rel in CORPORA[:2]]
    lines_of: dict[str, list[str]] = {}
    for name, source, shouted in sources:
        lines = [line for line in source.read_text().splitlines() if line.strip()]
        for line in lines:
            event = json.loads(line)
            lines_of.setdefault(name, []).append(shout(event) if shouted else event)
    for name, events in lines_of.items():
        ids = []
        for n, event in enumerate(events, start=1):
            event["auditID"] = f"{name}-L{n}"
            ids.append(event["auditID"])
        path = out / f"{name}.jsonl"
        path.write_text("\n".join(json.dumps(e) for e in events) + "\n")
        corpora.append(Corpus(name, path, ids))
    return corpora


def wait_for(what: str, check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    binary = ward_bin()
    if not binary.exists():
        pytest.fail(f"{binary} is missing: run `cargo build -p ward --locked` or set WARD_BIN")
    root = tmp_path_factory.mktemp("ward-api")
    tokens = root / "tokens"
    tokens.write_text("\n".join(TOKENS.values()) + "\n")
    tokens.chmod(0o600)  # ward refuses a tokens file others may read
    corpora = rewrite_corpora(root)
    port = free_port()
    log = root / "indexer.log"
    args = [
        str(binary), "indexer",
        "--data", str(root / "data"),
        "--listen", f"127.0.0.1:{port}",
        "--tokens", str(tokens),
        # Fuzzing sends hundreds of requests a second; the limit itself is
        # tested by the Rust tests and test_audit_trail.py.
        "--rate-limit", "0",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    srv = Server(base, process, log, corpora)
    try:
        def healthy():
            if process.poll() is not None:
                raise AssertionError(f"ward indexer exited: {log.read_text()}")
            try:
                return requests.get(base + "/healthz", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for("the indexer to answer /healthz", healthy)
        total = 0
        for corpus in corpora:
            items = [json.loads(line) for line in corpus.path.read_text().splitlines()]
            body = {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items}
            r = requests.post(
                base + "/api/v1/k8s/audit", json=body, headers=auth("admin"), timeout=60
            )
            assert r.status_code == 200, f"loading {corpus.name}: {r.status_code} {r.text}"
            total += len(items)

        def loaded():
            r = srv.get("/api/v1/search", q="_exists_:auditID", limit="1")
            return r.status_code == 200 and r.json()["total"] == total

        wait_for(f"{total} fixture events to be searchable", loaded)
        yield srv
    finally:
        process.kill()
        process.wait(timeout=30)


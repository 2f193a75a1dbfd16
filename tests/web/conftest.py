"""Fixtures of the dashboard tests: a real `ward indexer` loaded with the
test data of `testdata/`, and Debian's Chromium driven by Playwright.

The server runs on a free loopback port with a temporary data directory and
a tokens file (admin, analyst, viewer, collector). The Kubernetes audit
events of the test data (falco traces, audit2rbac) are sent through
the audit webhook as `EventList` bodies, as an API server would; the
built-in rules raise alerts on some of them.

Environment: `WARD_BIN` (default: `$CARGO_TARGET_DIR/debug/ward`, else
`target/debug/ward`), `WARD_TEST_ARTIFACTS` (screenshots; default
`tests/web/artifacts`), `CHROMIUM` (default `/usr/bin/chromium`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))  # ward_testdata, where testdata/ is
import ward_testdata  # noqa: E402

TOKENS = {
    "admin": "admin-token-web-000000000001",
    "analyst": "analyst-token-web-0000000001",
    "viewer": "viewer-token-web-00000000001",
    "collector": "collector-token-web-0000001",
}
LABELS = {"admin": "ops", "analyst": "alice", "viewer": "victor"}
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def ward_bin() -> Path:
    if os.environ.get("WARD_BIN"):
        return Path(os.environ["WARD_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    if not target.is_absolute():
        target = REPO / target
    return target / "debug" / "ward"


def artifacts_dir() -> Path:
    d = Path(os.environ.get("WARD_TEST_ARTIFACTS") or Path(__file__).parent / "artifacts")
    d.mkdir(parents=True, exist_ok=True)
    return d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Ward:
    """A running indexer and helpers to call its API."""

    base: str
    proc: subprocess.Popen
    log: Path
    loaded: dict = field(default_factory=dict)

    def request(self, method: str, path: str, role: str = "admin", body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {TOKENS[role]}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw.decode(errors="replace")

    def get(self, path: str, role: str = "admin"):
        status, body = self.request("GET", path, role)
        assert status == 200, (path, status, body)
        return body

    def search(self, q: str, **params) -> dict:
        qs = urllib.parse.urlencode({"q": q, **params})
        return self.get(f"/api/v1/search?{qs}")

    def send_audit(self, events: list[dict], cluster: str = "fixture") -> dict:
        """Posts events through the audit webhook, as an API server does."""
        body = {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": events}
        status, receipt = self.request(
            "POST", f"/api/v1/k8s/audit?cluster={cluster}", "collector", body
        )
        assert status == 200, receipt
        return receipt

    def new_event(self, cluster: str, name: str) -> dict:
        """A fresh audit event (now, a new auditID): a pod read by `tester`."""
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        audit_id = str(uuid.uuid4())
        return {
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "Metadata",
            "auditID": audit_id,
            "stage": "ResponseComplete",
            "requestURI": f"/api/v1/namespaces/live/pods/{name}",
            "verb": "get",
            "user": {"username": "tester", "groups": ["system:authenticated"]},
            "sourceIPs": ["10.9.8.7"],
            "userAgent": "kubectl/v1.30.0",
            "objectRef": {"resource": "pods", "namespace": "live", "name": name, "apiVersion": "v1"},
            "responseStatus": {"metadata": {}, "code": 200},
            "requestReceivedTimestamp": now,
            "stageTimestamp": now,
        }


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def ward():
    binary = ward_bin()
    if not binary.exists():
        pytest.fail(f"no ward binary at {binary}: run `cargo build -p ward` or set WARD_BIN")
    fixtures = ward_testdata.fixtures()
    tmp = Path(tempfile.mkdtemp(prefix="ward-web-"))
    tokens = tmp / "tokens"
    tokens.write_text(
        "".join(
            f"{role}/{LABELS[role]}:{TOKENS[role]}\n" if role in LABELS else f"{role}:{TOKENS[role]}\n"
            for role in TOKENS
        )
    )
    tokens.chmod(0o600)  # ward refuses a tokens file others may read
    port = free_port()
    log = tmp / "ward.log"
    proc = subprocess.Popen(
        [
            str(binary), "indexer",
            "--data", str(tmp / "data"),
            "--listen", f"127.0.0.1:{port}",
            "--tokens", str(tokens),
            "--log", "warn",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    server = Ward(base=f"http://127.0.0.1:{port}", proc=proc, log=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ward exited: {log.read_text()}")
            try:
                with urllib.request.urlopen(server.base + "/healthz", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"ward did not start: {log.read_text()}")
                time.sleep(0.1)
        falco = _jsonl(fixtures / "falco-traces" / "falco_k8s_audit_traces.jsonl")
        rbac = _jsonl(fixtures / "audit2rbac" / "demo.log")
        server.send_audit(falco)
        server.send_audit(rbac)
        server.loaded = {"falco": falco, "audit2rbac": rbac}
        # The webhook answers after the commit; wait until a search sees it all.
        want = len(falco) + len(rbac)
        deadline = time.monotonic() + 20
        while server.search("source:audit", limit=0)["total"] < want:
            assert time.monotonic() < deadline, "fixtures not searchable"
            time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
            args=CHROMIUM_ARGS,
        )
        yield b
        b.close()


@pytest.fixture
def open_page(browser, ward, request):
    """open_page(path, role='analyst') -> a page at 1280x800, signed in with
    the role's token (None: not signed in). Saves a screenshot at the end of
    the test as `<test name>.png`, whatever the outcome."""
    contexts = []
    pages = []

    def _open(path: str, role: str | None = "analyst", color_scheme: str = "light"):
        ctx = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme=color_scheme)
        if role:
            ctx.add_init_script(
                "if (location.protocol.startsWith('http')) "
                f"window.sessionStorage.setItem('ward.token', {json.dumps(TOKENS[role])});"
            )
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(10_000)
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.js_errors = errors
        page.goto(ward.base + path)
        pages.append(page)
        return page

    yield _open
    for i, page in enumerate(pages):
        suffix = "" if i == 0 else f"-{i}"
        try:
            page.screenshot(path=str(artifacts_dir() / f"{request.node.name}{suffix}.png"))
        except Exception:  # noqa: BLE001 - a closed page has nothing to save
            pass
    for page in pages:
        assert not page.js_errors, page.js_errors
    for ctx in contexts:
        ctx.close()


def shot(page, name: str) -> None:
    """A screenshot at an intermediate step."""
    page.screenshot(path=str(artifacts_dir() / f"{name}.png"))

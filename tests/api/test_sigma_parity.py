"""Queries that pySigma's Lucene backend writes from SigmaHQ's Kubernetes
audit rules return, through /api/v1/search, exactly the events that Ward's
rule engine (`ward rules test`) alerts on for the same rules and events.

The Lucene text is what `sigma convert -t lucene` prints (same backend, no
processing pipeline: the rules already use audit-event field names), with
its escaping (`kube\\-system`, `*\\/bin\\/sh*`) and grouped values
(`verb:(create OR delete)`). Falco's and Panther's events are loaded a
second time with the matched values in upper case (Sigma matches strings
case-insensitively). Both sides are also held to
EXPECTED_SIGMA_HITS.txt, computed by two independent Sigma evaluators, so a
bug shared by the engine and the query language still fails.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from sigma.backends.elasticsearch import LuceneBackend
from sigma.collection import SigmaCollection

import ward_testdata
from conftest import ward_bin

RULES = sorted((ward_testdata.fixtures() / "sigma-k8s").glob("*.yml"))

# EXPECTED_SIGMA_HITS.txt names corpora by path; conftest names them short.
CORPUS_OF_HEADER = {
    "falco-traces/falco_k8s_audit_traces.jsonl": "falco",
    "panther-k8s/panther_k8s_audit_events.jsonl": "panther",
    "audit2rbac/demo.log": "audit2rbac",
}


def expected_hits() -> dict[str, set[str]]:
    """Rule file name -> the rewritten auditIDs of its expected hits."""
    hits: dict[str, set[str]] = {}
    corpus = None
    for line in (ward_testdata.fixtures() / "EXPECTED_SIGMA_HITS.txt").read_text().splitlines():
        if line.startswith("== "):
            corpus = CORPUS_OF_HEADER[line[3:].strip()]
            continue
        m = re.match(r"\s*\d+\s+(\S+\.yml)\s+lines=\[([\d, ]*)\]", line)
        if m and corpus:
            lines = [int(n) for n in m.group(2).split(",") if n.strip()]
            hits.setdefault(m.group(1), set()).update(f"{corpus}-L{n}" for n in lines)
    return hits


def lucene(rule: Path) -> str:
    """The backend's query; fails (not skips) when a Kubernetes rule does not convert."""
    queries = LuceneBackend().convert(SigmaCollection.from_yaml(rule.read_text()))
    assert len(queries) == 1, f"{rule.name}: {queries}"
    return queries[0]


def engine_ids(rule: Path, corpora) -> set[str]:
    out = subprocess.run(
        [str(ward_bin()), "rules", "test", "--rules", str(rule), *[str(c.path) for c in corpora]],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    ids: set[str] = set()
    for line in out.stdout.splitlines():
        if line.strip():
            ids.update(json.loads(line)["audit_ids"])
    return ids


def test_all_sixteen_rules_are_here():
    assert len(RULES) == 16, [r.name for r in RULES]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.stem.removeprefix("kubernetes_audit_"))
def test_lucene_query_finds_what_the_engine_finds(server, rule):
    query = lucene(rule)
    found = server.search_ids(query)
    engine = engine_ids(rule, server.corpora)
    expected = expected_hits()[rule.name]
    assert found == engine, (
        f"{rule.name}\nquery: {query}\n"
        f"only search: {sorted(found - engine)}\nonly engine: {sorted(engine - found)}"
    )
    originals = {i for i in engine if not i.startswith("shouting-")}
    assert originals == expected, (
        f"{rule.name}: engine {sorted(originals)} != expected {sorted(expected)}"
    )

"""deploy/prometheus: scrape configuration and alerting rules."""

from __future__ import annotations

import re

import pytest
import yaml

import kustomize_lite
from conftest import DEPLOY

SCRAPE = DEPLOY / "prometheus" / "scrape-config.yaml"
ALERTS = DEPLOY / "prometheus" / "ward-alerts.yaml"
REQUIRED_METRICS = {
    "ward_collector_checkpoint_lag_bytes",
    "ward_collector_spool_bytes",
    "ward_indexer_ingest_errors_total",
    "ward_collector_records_dropped_total",
}
DURATION = re.compile(r"^\d+(ms|s|m|h|d|w|y)$")


@pytest.fixture(scope="module")
def scrape():
    return yaml.safe_load(SCRAPE.read_text())


@pytest.fixture(scope="module")
def alerts():
    return yaml.safe_load(ALERTS.read_text())


def _relabel_keeps(job):
    return {tuple(r["source_labels"]): r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"}


def test_scrape_jobs_select_ward_pods_by_labels(scrape, rendered_base):
    jobs = {j["job_name"]: j for j in scrape["scrape_configs"]}
    assert set(jobs) == {"ward-collector", "ward-indexer"}
    pods = {}
    for obj in rendered_base:
        if obj["kind"] in ("DaemonSet", "StatefulSet"):
            template = obj["spec"]["template"]
            pods[template["metadata"]["labels"]["app.kubernetes.io/component"]] = template
    for component in ("collector", "indexer"):
        job = jobs[f"ward-{component}"]
        sd = job["kubernetes_sd_configs"][0]
        assert sd["role"] == "pod" and sd["namespaces"]["names"] == ["ward-system"]
        keeps = _relabel_keeps(job)
        labels = pods[component]["metadata"]["labels"]
        assert keeps[("__meta_kubernetes_pod_label_app_kubernetes_io_name",)] == labels["app.kubernetes.io/name"]
        assert keeps[("__meta_kubernetes_pod_label_app_kubernetes_io_component",)] == component
        port_name = keeps[("__meta_kubernetes_pod_container_port_name",)]
        ports = {p["name"]: p["containerPort"] for p in pods[component]["spec"]["containers"][0]["ports"]}
        assert port_name in ports, (component, port_name)
    assert jobs["ward-indexer"]["scheme"] == "https"
    assert jobs["ward-indexer"]["tls_config"].get("insecure_skip_verify") is not True


def _exprs(alerts):
    return {rule["alert"]: rule["expr"] for group in alerts["groups"] for rule in group["rules"]}


def test_alert_rules_are_well_formed(alerts):
    names = set()
    for group in alerts["groups"]:
        assert set(group) <= {"name", "rules", "interval", "limit"}
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, rule
            assert rule["alert"] not in names
            names.add(rule["alert"])
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
            if "for" in rule:
                assert DURATION.match(rule["for"]), rule["for"]
            assert rule["labels"]["severity"] in {"warning", "critical"}
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
            expr = rule["expr"]
            assert expr.count("(") == expr.count(")") and expr.count("[") == expr.count("]")
            assert expr.count("{") == expr.count("}")
            for window in re.findall(r"\[([^\]]+)\]", expr):
                assert DURATION.match(window), window


def test_alerts_cover_ward_health(alerts):
    exprs = _exprs(alerts)
    used = " ".join(exprs.values())
    for metric in REQUIRED_METRICS:
        assert metric in used, metric
    # Counters are only used through rate()/increase().
    for metric in ("ward_indexer_ingest_errors_total", "ward_collector_records_dropped_total"):
        for match in re.finditer(metric, used):
            before = used[:match.start()].rstrip()
            assert re.search(r"(rate|increase)\($", before), f"{metric} used without rate/increase"
    assert any("readiness" in a.lower() or "NotReady" in a for a in exprs), "an alert for indexer not ready"
    assert any("up{job=\"ward-indexer\"}" in e for e in exprs.values())


def test_prometheus_files_are_not_kubernetes_objects():
    """They are Prometheus configuration, not manifests: keep them out of kustomize."""
    for path in (SCRAPE, ALERTS):
        doc = yaml.safe_load(path.read_text())
        assert "kind" not in doc
        with pytest.raises(kustomize_lite.KustomizeError):
            kustomize_lite.load_yaml_documents(path)

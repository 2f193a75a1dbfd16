"""deploy/audit/audit-policy.yaml: structure, the levels it assigns, and that
those levels carry every field Ward's detections read."""

from __future__ import annotations

import copy
import fnmatch
import json
import re
from pathlib import Path

import pytest
import yaml

import audit_policy as ap
import ward_testdata
from audit_policy import Request, evaluate, level_rank
from conftest import AUDIT_POLICY, DEPLOY, RULES_BUILTIN

FALCO_TRACES = ward_testdata.fixtures() / "falco-traces" / "falco_k8s_audit_traces.jsonl"
PANTHER_EVENTS = ward_testdata.fixtures() / "panther-k8s" / "panther_k8s_audit_events.jsonl"
PANTHER_LABELS = ward_testdata.fixtures() / "panther-k8s" / "panther_k8s_audit_labels.tsv"

ALICE = dict(user="alice@example.com", groups=("system:authenticated", "developers"))
WRITE_VERBS = ("create", "update", "patch", "delete")
BODY_VERBS = ("create", "update", "patch")

# What Ward's detections read, for the requests where the audit policy must
# record more than Metadata. Derived from the rules Ward builds on: Falco's
# k8s_audit_rules.yaml (ka.req.* = requestObject, ka.resp.* = responseObject)
# and SigmaHQ's kubernetes/audit rules (testdata/). The fields of
# rules/builtin are checked on top of this by test_builtin_rule_fields_*.
# (api group, resource, subresource, verbs) -> least level
DETECTION_NEEDS = {
    ("", "pods", "", BODY_VERBS): "RequestResponse",  # ka.req.pod.* + ka.resp.name
    ("", "configmaps", "", BODY_VERBS): "Request",  # ka.req.configmap.obj (credentials in ConfigMaps)
    ("", "services", "", BODY_VERBS): "Request",  # ka.req.service.type/ports (NodePort)
    ("rbac.authorization.k8s.io", "roles", "", BODY_VERBS): "Request",  # ka.req.role.rules
    ("rbac.authorization.k8s.io", "clusterroles", "", BODY_VERBS): "Request",
    ("rbac.authorization.k8s.io", "rolebindings", "", BODY_VERBS): "Request",  # ka.req.binding.*
    ("rbac.authorization.k8s.io", "clusterrolebindings", "", BODY_VERBS): "Request",
    ("apps", "deployments", "", BODY_VERBS): "Request",  # pod templates (sidecar injection)
    ("apps", "daemonsets", "", BODY_VERBS): "Request",
    ("batch", "cronjobs", "", BODY_VERBS): "Request",
}

# Resources whose API group is implied when a rule does not name one.
RESOURCE_GROUPS = {
    **{r: "" for r in ("pods", "configmaps", "secrets", "services", "serviceaccounts", "namespaces",
                       "nodes", "events", "endpoints", "persistentvolumes", "persistentvolumeclaims",
                       "replicationcontrollers", "limitranges", "resourcequotas")},
    **{r: "apps" for r in ("deployments", "daemonsets", "statefulsets", "replicasets",
                           "controllerrevisions")},
    **{r: "batch" for r in ("jobs", "cronjobs")},
    **{r: "rbac.authorization.k8s.io" for r in ("roles", "clusterroles", "rolebindings",
                                                "clusterrolebindings")},
    **{r: "admissionregistration.k8s.io" for r in (
        "mutatingwebhookconfigurations", "validatingwebhookconfigurations",
        "validatingadmissionpolicies", "validatingadmissionpolicybindings")},
    **{r: "authorization.k8s.io" for r in ("selfsubjectrulesreviews", "selfsubjectaccessreviews",
                                           "subjectaccessreviews", "localsubjectaccessreviews")},
    "tokenreviews": "authentication.k8s.io",
    "certificatesigningrequests": "certificates.k8s.io",
    "networkpolicies": "networking.k8s.io",
    "ingresses": "networking.k8s.io",
    "leases": "coordination.k8s.io",
    "customresourcedefinitions": "apiextensions.k8s.io",
    "podsecuritypolicies": "policy",
    "poddisruptionbudgets": "policy",
    "storageclasses": "storage.k8s.io",
}

# Requests whose contents must never be logged: at most Metadata, always.
SENSITIVE = [("", "secrets", ""), ("", "serviceaccounts", "token"), ("authentication.k8s.io", "tokenreviews", "")]


@pytest.fixture(scope="module")
def policy() -> dict:
    return yaml.safe_load(AUDIT_POLICY.read_text())


def level(policy, **kwargs) -> str:
    return evaluate(policy, Request(**{**ALICE, **kwargs})).level


# ------------------------------------------------------------- structure
def test_policy_is_a_valid_audit_v1_policy(policy):
    assert ap.validate_policy(policy) == []
    assert policy["apiVersion"] == "audit.k8s.io/v1" and policy["kind"] == "Policy"
    assert policy["omitStages"] == ["RequestReceived"]
    # Exactly one document in the file.
    assert len(list(yaml.safe_load_all(AUDIT_POLICY.read_text()))) == 1


def test_every_rule_names_real_groups(policy):
    known_groups = set(RESOURCE_GROUPS.values()) | {
        "discovery.k8s.io", "events.k8s.io", "metrics.k8s.io", "apiregistration.k8s.io",
        "autoscaling", "extensions", "node.k8s.io", "scheduling.k8s.io", "resource.k8s.io"}
    for rule in policy["rules"]:
        for group in rule.get("resources", []):
            assert group.get("group", "") in known_groups, group


def test_last_rule_is_a_metadata_catch_all(policy):
    """Nothing falls off the end of the policy unlogged."""
    assert policy["rules"][-1] == {"level": "Metadata"}


@pytest.mark.parametrize("broken,message", [
    ({"apiVersion": "audit.k8s.io/v1beta1"}, "apiVersion"),
    ({"kind": "AuditPolicy"}, "kind"),
    ({"omitStages": ["RequestRecieved"]}, "unknown stage"),
    ({"rules": [{"level": "Everything"}]}, "level must be"),
    ({"rules": [{"level": "None", "nonResourceURLs": ["/healthz"], "resources": [{"group": ""}]}]}, "both"),
    ({"rules": [{"level": "None", "resource": [{"group": ""}]}]}, "unknown fields"),
    ({"rules": [{"level": "None", "resources": [{"group": "", "resources": ["pods/*/x"]}]}]}, "bad resource"),
    ({"rules": [{"level": "None", "nonResourceURLs": ["healthz"]}]}, "must start with /"),
])
def test_validator_rejects_broken_policies(policy, broken, message):
    bad = {**copy.deepcopy(policy), **broken}
    assert any(message in e for e in ap.validate_policy(bad)), ap.validate_policy(bad)


# --------------------------------------------------------- the evaluator
def test_evaluator_first_match_wins_and_wildcards():
    pol = {"rules": [
        {"level": "None", "users": ["system:kube-proxy"]},
        {"level": "RequestResponse", "resources": [{"group": "", "resources": ["pods/*"]}]},
        {"level": "Request", "resources": [{"group": "", "resources": ["*/status"]}]},
        {"level": "Request", "resources": [{"group": "", "resources": ["configmaps"],
                                            "resourceNames": ["cfg"]}]},
        {"level": "Metadata", "namespaces": ["kube-system"]},
        {"level": "Metadata", "nonResourceURLs": ["/api*"]},
    ]}
    assert evaluate(pol, Request("system:kube-proxy", verb="get", resource="pods")).level == "None"
    assert evaluate(pol, Request("bob", resource="pods", subresource="log")).level == "RequestResponse"
    # As in kube-apiserver's checker, "pods/*" also matches "pods" itself.
    assert evaluate(pol, Request("bob", resource="pods")).level == "RequestResponse"
    assert evaluate(pol, Request("bob", resource="services")).level == "None"
    assert evaluate(pol, Request("bob", resource="nodes", subresource="status")).level == "Request"
    assert evaluate(pol, Request("bob", resource="configmaps", name="cfg")).level == "Request"
    assert evaluate(pol, Request("bob", resource="configmaps", name="other")).level == "None"
    assert evaluate(pol, Request("bob", resource="configmaps", namespace="kube-system")).level == "Metadata"
    assert evaluate(pol, Request("bob", path="/apis/apps")).level == "Metadata"
    assert evaluate(pol, Request("bob", path="/metrics")).level == "None"


# ------------------------------------------------------------ the levels
@pytest.mark.parametrize("group,resource,subresource", SENSITIVE)
@pytest.mark.parametrize("verb", ["get", "list", "watch", "create", "update", "patch", "delete"])
@pytest.mark.parametrize("who", [
    ALICE,
    dict(user="system:anonymous", groups=("system:unauthenticated",)),
    dict(user="system:node:worker-1", groups=("system:nodes", "system:authenticated")),
    dict(user="system:kube-controller-manager", groups=("system:authenticated",)),
])
def test_secret_contents_are_never_logged(policy, group, resource, subresource, verb, who):
    decision = evaluate(policy, Request(**who, verb=verb, api_group=group, resource=resource,
                                        subresource=subresource, namespace="kube-system"))
    assert decision.level == "Metadata", (who, verb, resource, subresource)


@pytest.mark.parametrize("request_kwargs", [
    dict(verb="create", resource="pods", namespace="default"),
    dict(verb="update", resource="pods", namespace="default"),
    dict(verb="patch", resource="pods", namespace="kube-system"),
    dict(verb="create", resource="pods", subresource="exec", namespace="default"),
    dict(verb="get", resource="pods", subresource="exec", namespace="default"),  # websocket exec
    dict(verb="create", resource="pods", subresource="attach", namespace="default"),
    dict(verb="create", resource="pods", subresource="portforward", namespace="default"),
    dict(verb="patch", resource="pods", subresource="ephemeralcontainers", namespace="default"),
    dict(verb="create", api_group="rbac.authorization.k8s.io", resource="clusterrolebindings"),
    dict(verb="create", api_group="rbac.authorization.k8s.io", resource="clusterroles"),
    dict(verb="patch", api_group="rbac.authorization.k8s.io", resource="roles", namespace="default"),
    dict(verb="create", api_group="rbac.authorization.k8s.io", resource="rolebindings", namespace="default"),
    dict(verb="create", resource="configmaps", namespace="kube-system"),
    dict(verb="update", resource="configmaps", namespace="default"),
    dict(verb="create", api_group="admissionregistration.k8s.io", resource="mutatingwebhookconfigurations"),
    dict(verb="update", api_group="admissionregistration.k8s.io", resource="validatingwebhookconfigurations"),
    dict(verb="create", resource="serviceaccounts", namespace="kube-system"),
])
def test_request_response_where_detections_need_the_objects(policy, request_kwargs):
    assert level(policy, **request_kwargs) == "RequestResponse", request_kwargs


@pytest.mark.parametrize("request_kwargs,expected", [
    # Reads are Metadata: nothing in the body a detection needs, lots of volume.
    (dict(verb="get", resource="pods", namespace="default"), "Metadata"),
    (dict(verb="list", resource="configmaps", namespace="kube-system"), "Metadata"),
    (dict(verb="list", resource="secrets"), "Metadata"),  # secrets enumeration is still visible
    # Kubelet API through the API server.
    (dict(verb="create", resource="nodes", subresource="proxy", name="worker-1"), "Request"),
    (dict(verb="get", resource="nodes", subresource="proxy", name="worker-1"), "Request"),
    # Workloads and other writes keep their request bodies.
    (dict(verb="create", api_group="apps", resource="deployments", namespace="default"), "Request"),
    (dict(verb="patch", api_group="apps", resource="daemonsets", namespace="kube-system"), "Request"),
    (dict(verb="create", api_group="batch", resource="cronjobs", namespace="default"), "Request"),
    (dict(verb="create", resource="services", namespace="default"), "Request"),
    (dict(verb="create", resource="namespaces"), "Request"),
    (dict(verb="create", api_group="certificates.k8s.io", resource="certificatesigningrequests"), "Request"),
    (dict(verb="update", api_group="certificates.k8s.io", resource="certificatesigningrequests",
          subresource="approval"), "Request"),
    # Events: deleting them is logged, the flood of them is not.
    (dict(verb="delete", resource="events", namespace="default"), "Metadata"),
    (dict(verb="deletecollection", api_group="events.k8s.io", resource="events", namespace="default"), "Metadata"),
    (dict(verb="create", resource="events", namespace="default"), "None"),
    # Permission discovery (Sigma "RBAC permission listing") is Metadata.
    (dict(verb="create", api_group="authorization.k8s.io", resource="selfsubjectrulesreviews"), "Metadata"),
    # Custom resources: Metadata (their bodies may hold credentials).
    (dict(verb="create", api_group="example.com", resource="widgets", namespace="default"), "Metadata"),
    # Non-resource: health probes dropped, the rest Metadata.
    (dict(verb="get", path="/healthz"), "None"),
    (dict(verb="get", path="/readyz/etcd"), "None"),
    (dict(verb="get", path="/api"), "Metadata"),
    (dict(verb="get", path="/metrics"), "Metadata"),
])
def test_other_levels(policy, request_kwargs, expected):
    assert level(policy, **request_kwargs) == expected, request_kwargs


def test_anonymous_requests_are_logged(policy):
    anon = dict(user="system:anonymous", groups=("system:unauthenticated",))
    assert evaluate(policy, Request(**anon, verb="get", path="/api")).level == "Request"
    assert evaluate(policy, Request(**anon, verb="list", resource="pods")).level == "Request"
    assert evaluate(policy, Request(**anon, verb="create", resource="events", namespace="x")).level == "None"
    # Anonymous health/version probes are kept: internet scanners fingerprint
    # exposed API servers with them (Panther "Anonymous API Access Web
    # Scanner"). Authenticated ones are noise and dropped.
    assert evaluate(policy, Request(**anon, verb="get", path="/version")).level == "Request"
    assert evaluate(policy, Request(**anon, verb="get", path="/livez")).level == "Request"
    assert evaluate(policy, Request(**ALICE, verb="get", path="/livez")).level == "None"


def test_forbidden_and_impersonated_requests_are_logged(policy):
    """403s and impersonation are visible at Metadata (responseStatus,
    impersonatedUser). The policy matches on the authenticated user, so
    what matters is that an ordinary user's reads of anything are logged."""
    for resource in ("pods", "secrets", "nodes", "namespaces", "configmaps", "serviceaccounts"):
        assert level_rank(level(policy, verb="get", resource=resource)) >= level_rank("Metadata")


def test_noise_rules_only_silence_system_identities(policy):
    """The None rules name system users/groups: the same request by a person
    is logged."""
    quiet = [
        (dict(user="system:kube-proxy", groups=("system:authenticated",)),
         dict(verb="watch", resource="endpoints")),
        (dict(user="system:node:n1", groups=("system:nodes", "system:authenticated")),
         dict(verb="update", api_group="coordination.k8s.io", resource="leases", namespace="kube-node-lease")),
        (dict(user="system:node:n1", groups=("system:nodes", "system:authenticated")),
         dict(verb="patch", resource="nodes", subresource="status", name="n1")),
        (dict(user="system:kube-scheduler", groups=("system:authenticated",)),
         dict(verb="update", api_group="coordination.k8s.io", resource="leases", namespace="kube-system")),
    ]
    for who, what in quiet:
        assert evaluate(policy, Request(**who, **what)).level == "None", (who, what)
        assert evaluate(policy, Request(**ALICE, **what)).level != "None", what


# --------------------------------------------------- recorded audit events
def _load_jsonl(path: Path) -> list[dict]:
    assert path.is_file(), f"{path} is missing (see testdata/ORIGIN.md)"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _rule_needs(event: dict) -> str:
    """Least level Ward's detections need for this event: Metadata for any
    security-relevant request, more per DETECTION_NEEDS and rules/builtin."""
    ref = event.get("objectRef") or {}
    need = "Metadata"
    for (group, resource, subresource, verbs), lvl in DETECTION_NEEDS.items():
        if (ref.get("apiGroup", "") or "", ref.get("resource", ""), ref.get("subresource", "") or "") == \
                (group, resource, subresource) and event.get("verb") in verbs:
            need = max(need, lvl, key=level_rank)
    for rule in builtin_rules(required=False):
        for target in rule.targets:
            if target.matches_event(event):
                need = max(need, rule.needs, key=level_rank)
    return need


def test_falco_traces_get_the_level_detections_need(policy):
    events = _load_jsonl(FALCO_TRACES)
    assert len(events) == 51
    problems = []
    for number, event in enumerate(events, 1):
        decision = evaluate(policy, ap.request_from_event(event))
        recorded = event.get("level", "Metadata")
        needed = _rule_needs(event)
        ok = level_rank(decision.level) >= level_rank(recorded) or \
            level_rank(decision.level) >= level_rank(needed)
        if not ok or decision.level == "None":
            problems.append(f"line {number}: {event.get('verb')} {event.get('requestURI')} by "
                            f"{event['user'].get('username')}: policy {decision.level}, recorded "
                            f"{recorded}, detections need {needed}")
        ref = event.get("objectRef") or {}
        if (ref.get("apiGroup", "") or "", ref.get("resource"), ref.get("subresource", "") or "") in SENSITIVE:
            assert decision.level == "Metadata", f"line {number}: secret contents would be logged"
        if decision.level != "None":
            assert event.get("stage") not in decision.omit_stages
    assert not problems, "\n".join(problems)


def test_panther_positive_events_are_not_dropped(policy):
    """Every event a Panther rule is expected to fire on (ExpectedResult true)
    must be logged at all."""
    events = _load_jsonl(PANTHER_EVENTS)
    labels = [line.split("\t") for line in PANTHER_LABELS.read_text().splitlines()[1:] if line.strip()]
    positives = [int(row[0]) for row in labels if row[4].strip().lower() == "true"]
    assert positives
    dropped = []
    for line in positives:
        event = events[line - 1]
        if not event.get("user") or not event.get("verb"):
            continue
        decision = evaluate(policy, ap.request_from_event(event))
        if decision.level == "None":
            dropped.append(f"line {line}: {event.get('verb')} {event.get('requestURI')}")
    assert not dropped, "\n".join(dropped)


# ----------------------------------------------------- rules/builtin fields
class Target:
    """The requests one AND-group of a rule selects, as far as the policy
    cares: API group, resource, subresource, verbs, users."""

    def __init__(self, group, resource, subresource, verbs, users, user_groups):
        self.group, self.resource, self.subresource = group, resource, subresource
        self.verbs, self.users, self.user_groups = verbs, users, user_groups

    def requests(self, for_level: str):
        if self.verbs:
            verbs = self.verbs
        elif for_level == "Request":
            verbs = BODY_VERBS  # only these verbs have a request body
        elif for_level == "RequestResponse":
            verbs = WRITE_VERBS
        else:
            verbs = ("get", "list", "watch") + WRITE_VERBS
        users = self.users or (ALICE["user"],)
        groups = tuple(self.user_groups) + ("system:authenticated",) if self.user_groups else ALICE["groups"]
        for verb in verbs:
            for user in users:
                for namespace in ("default", "kube-system"):
                    yield Request(user=user, groups=groups, verb=verb, api_group=self.group,
                                  resource=self.resource, subresource=self.subresource, namespace=namespace)

    def matches_event(self, event: dict) -> bool:
        ref = event.get("objectRef") or {}
        return (ref.get("resource") == self.resource
                and (ref.get("subresource", "") or "") == self.subresource
                and (ref.get("apiGroup", "") or "") == self.group
                and (not self.verbs or event.get("verb") in self.verbs))

    def __repr__(self):
        return f"{self.group or 'core'}/{self.resource}{'/' + self.subresource if self.subresource else ''} {self.verbs or '*'}"


class BuiltinRule:
    def __init__(self, path: Path, doc: dict):
        self.path, self.doc = path, doc
        self.title = doc.get("title", path.name)
        self.fields: set[str] = set()
        self.targets: list[Target] = []
        self.untargeted_groups = 0
        self.stages: set[str] = set()
        self.keywords = False
        detection = doc.get("detection") or {}
        negated = self._negated_selections(detection)
        for name, selection in detection.items():
            if name in ("condition", "timeframe"):
                continue
            groups = selection if isinstance(selection, list) else [selection]
            for group in groups:
                if not isinstance(group, dict):
                    # Keyword search over every text value: in an audit event
                    # free text worth searching is in the object bodies.
                    self.keywords = True
                    continue
                self._add_group(group, negated=name in negated)
        needs = [ap.level_needed_for_field(f) for f in self.fields] + (["Request"] if self.keywords else [])
        self.needs = max(needs or ["Metadata"], key=level_rank)

    @staticmethod
    def _negated_selections(detection: dict) -> set[str]:
        """Selections used only under `not` in the condition (filters)."""
        conditions = detection.get("condition", "")
        conditions = conditions if isinstance(conditions, list) else [conditions]
        names = [n for n in detection if n not in ("condition", "timeframe")]
        negated, positive = set(), set()
        for condition in conditions:
            for match in re.finditer(r"(not\s+)?(?:(?:1|all)\s+of\s+)?([A-Za-z_][\w*]*)", str(condition)):
                pattern = match.group(2)
                if pattern in ("and", "or", "not", "of", "them", "1", "all"):
                    continue
                hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
                (negated if match.group(1) else positive).update(hits)
        return negated - positive

    @staticmethod
    def _values(group: dict, key: str) -> list[str] | None:
        """Exact-match values selected for `key` (no modifiers), else None."""
        for raw, value in group.items():
            name, *mods = raw.split("|")
            if name == key and not mods:
                values = value if isinstance(value, list) else [value]
                return [str(v) for v in values if v is not None]
        return None

    def _add_group(self, group: dict, negated: bool = False):
        for raw in group:
            self.fields.add(raw.split("|", 1)[0])
        if negated:
            return  # a filter narrows the rule; it does not select requests
        for stage in self._values(group, "stage") or []:
            self.stages.add(stage)
        resources = self._values(group, "objectRef.resource")
        if not resources:
            self.untargeted_groups += 1
            return
        groups = self._values(group, "objectRef.apiGroup")
        subresources = self._values(group, "objectRef.subresource") or [""]
        verbs = tuple(self._values(group, "verb") or ())
        users = tuple(self._values(group, "user.username") or ())
        user_groups = tuple(self._values(group, "user.groups") or ())
        for resource in resources:
            api_groups = groups if groups is not None else [RESOURCE_GROUPS.get(resource)]
            for api_group in api_groups:
                if api_group is None:
                    raise AssertionError(
                        f"{self.path}: rule {self.title!r} selects resource {resource!r} without "
                        f"objectRef.apiGroup; add the group to the rule or to RESOURCE_GROUPS here")
                for sub in subresources:
                    self.targets.append(Target(api_group, resource, sub, verbs, users, user_groups))


AUDIT_FIELD_PREFIXES = ("objectRef.", "requestObject.", "responseObject.", "responseStatus.", "verb",
                        "user.", "impersonatedUser.", "requestURI", "annotations.", "sourceIPs", "userAgent")


def _is_audit_rule(doc: dict) -> bool:
    """A rule on Kubernetes audit events (by its logsource, or by the fields it reads)."""
    if (doc.get("logsource") or {}).get("service") == "audit":
        return True
    keys = []
    for name, selection in doc["detection"].items():
        for group in (selection if isinstance(selection, list) else [selection]):
            if isinstance(group, dict) and name != "condition":
                keys += [k.split("|", 1)[0] for k in group]
    return any(k.startswith(AUDIT_FIELD_PREFIXES) for k in keys)


def builtin_rules(required: bool = True, root: Path = RULES_BUILTIN) -> list[BuiltinRule]:
    if not root.is_dir():
        if required:
            pytest.fail(
                f"{root} does not exist. Ward's built-in detection rules are expected "
                "there (rules/builtin/**/*.yml); this test checks that the audit policy records "
                "every field they read, so it cannot pass without them.", pytrace=False)
        return []
    rules = []
    for path in sorted(root.rglob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and isinstance(doc.get("detection"), dict) and _is_audit_rule(doc):
                rules.append(BuiltinRule(path, doc))
    if required and not rules:
        pytest.fail(f"{root} holds no detection rule for Kubernetes audit events", pytrace=False)
    return rules


def test_builtin_rules_exist():
    rules = builtin_rules()
    assert rules


def test_missing_builtin_rules_fail_loudly(tmp_path):
    """Without rules/builtin the field check fails (never skips)."""
    with pytest.raises(pytest.fail.Exception, match="does not exist"):
        builtin_rules(root=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(pytest.fail.Exception, match="holds no detection rule"):
        builtin_rules(root=tmp_path / "empty")


def test_builtin_rule_fields_are_recorded_by_the_policy(policy):
    """For every built-in audit rule: every request it selects is logged, and
    at a level that carries every field it reads (requestObject needs
    Request, responseObject RequestResponse, the rest Metadata)."""
    problems = []
    for rule in builtin_rules():
        if rule.needs != "Metadata" and rule.untargeted_groups and not rule.targets:
            problems.append(f"{rule.path.name}: {rule.title!r} reads "
                            f"{sorted(f for f in rule.fields if ap.level_needed_for_field(f) != 'Metadata')} "
                            "but selects no objectRef.resource: the policy records bodies only for "
                            "specific resources, so name them in the rule")
        for stage in rule.stages - {"ResponseStarted", "ResponseComplete", "Panic"}:
            problems.append(f"{rule.path.name}: {rule.title!r} selects stage {stage}, which the policy omits")
        for target in rule.targets:
            for req in target.requests(rule.needs):
                got = evaluate(policy, req).level
                if (target.group, target.resource, target.subresource) in SENSITIVE:
                    wanted = "Metadata"  # capped on purpose: contents never logged
                    if rule.needs != "Metadata":
                        problems.append(f"{rule.path.name}: {rule.title!r} reads the contents of "
                                        f"{target}, which the policy never logs")
                        break
                else:
                    wanted = rule.needs
                if level_rank(got) < level_rank(wanted):
                    problems.append(f"{rule.path.name}: {rule.title!r} needs {wanted} for {target} "
                                    f"({req.verb} by {req.user} in {req.namespace}), policy gives {got}")
                    break
    assert not problems, "\n".join(problems)


def test_builtin_rule_field_extraction():
    """The extractor itself, on a rule shaped like Ward's."""
    doc = yaml.safe_load("""
title: Privileged pod
logsource: {product: kubernetes, service: audit}
detection:
  selection:
    verb: create
    objectRef.resource: pods
    requestObject.spec.containers.securityContext.privileged: true
  filter:
    - user.username|startswith: 'system:'
    - responseObject.metadata.name|contains: ignored
  condition: selection and not filter
""")
    rule = BuiltinRule(Path("x.yml"), doc)
    assert "requestObject.spec.containers.securityContext.privileged" in rule.fields
    assert rule.needs == "RequestResponse"
    assert [repr(t) for t in rule.targets] == ["core/pods ('create',)"]


def test_deploy_audit_docs_reference_the_policy():
    readme = (DEPLOY / "audit" / "README.md").read_text()
    for flag in ("--audit-policy-file", "--audit-log-path", "--audit-log-maxage", "--audit-log-maxbackup",
                 "--audit-log-maxsize", "--audit-log-format=json", "--audit-webhook-config-file",
                 "--audit-webhook-mode=batch", "--audit-webhook-batch-max-size"):
        assert flag in readme, flag


def test_webhook_kubeconfig():
    config = yaml.safe_load((DEPLOY / "audit" / "webhook-kubeconfig.yaml").read_text())
    assert config["kind"] == "Config" and config["apiVersion"] == "v1"
    cluster = config["clusters"][0]["cluster"]
    assert cluster["server"] == "https://ward-indexer-ingest.ward-system.svc:7171/api/v1/k8s/audit"
    assert cluster.get("certificate-authority") and not cluster.get("insecure-skip-tls-verify")
    user = config["users"][0]["user"]
    assert user["token"].startswith("REPLACE_ME")
    context = {c["name"]: c["context"] for c in config["contexts"]}[config["current-context"]]
    assert context == {"cluster": config["clusters"][0]["name"], "user": config["users"][0]["name"]}

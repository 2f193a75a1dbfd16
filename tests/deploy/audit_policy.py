"""Validate and evaluate a Kubernetes audit policy (audit.k8s.io/v1 Policy)
the way kube-apiserver does.

Validation follows k8s.io/apiserver/pkg/apis/audit/validation; evaluation
follows k8s.io/apiserver/pkg/audit/policy/checker.go: the first rule whose
users, userGroups, verbs, namespaces+resources or nonResourceURLs all match
decides the level; with no matching rule the level is None.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LEVELS = ["None", "Metadata", "Request", "RequestResponse"]
STAGES = {"RequestReceived", "ResponseStarted", "ResponseComplete", "Panic"}
POLICY_FIELDS = {"apiVersion", "kind", "metadata", "rules", "omitStages", "omitManagedFields"}
RULE_FIELDS = {"level", "users", "userGroups", "verbs", "resources", "namespaces",
               "nonResourceURLs", "omitStages", "omitManagedFields"}
GROUP_RESOURCE_FIELDS = {"group", "resources", "resourceNames"}


def level_rank(level: str) -> int:
    return LEVELS.index(level)


def validate_policy(policy: dict) -> list[str]:
    """Return every problem kube-apiserver would reject the policy for, plus
    unknown fields (strict decoding)."""
    errors: list[str] = []
    if policy.get("apiVersion") != "audit.k8s.io/v1":
        errors.append(f"apiVersion must be audit.k8s.io/v1, not {policy.get('apiVersion')!r}")
    if policy.get("kind") != "Policy":
        errors.append(f"kind must be Policy, not {policy.get('kind')!r}")
    unknown = set(policy) - POLICY_FIELDS
    if unknown:
        errors.append(f"unknown policy fields {sorted(unknown)}")
    for stage in policy.get("omitStages", []) or []:
        if stage not in STAGES:
            errors.append(f"policy omitStages: unknown stage {stage!r}")
    if not isinstance(policy.get("omitManagedFields", False), bool):
        errors.append("omitManagedFields must be a boolean")
    rules = policy.get("rules")
    if not isinstance(rules, list) or not rules:
        errors.append("rules must be a non-empty list")
        return errors
    for index, rule in enumerate(rules):
        where = f"rules[{index}]"
        if not isinstance(rule, dict):
            errors.append(f"{where}: must be a mapping")
            continue
        unknown = set(rule) - RULE_FIELDS
        if unknown:
            errors.append(f"{where}: unknown fields {sorted(unknown)}")
        if rule.get("level") not in LEVELS:
            errors.append(f"{where}: level must be one of {LEVELS}, not {rule.get('level')!r}")
        for key in ("users", "userGroups", "verbs", "namespaces", "nonResourceURLs", "omitStages"):
            value = rule.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                errors.append(f"{where}: {key} must be a list of strings")
        for stage in rule.get("omitStages", []) or []:
            if stage not in STAGES:
                errors.append(f"{where}: omitStages: unknown stage {stage!r}")
        if (rule.get("resources") or rule.get("namespaces")) and rule.get("nonResourceURLs"):
            errors.append(f"{where}: rules cannot apply to both regular resources and non-resource URLs")
        for url in rule.get("nonResourceURLs", []) or []:
            if not url.startswith("/") and url != "*":
                errors.append(f"{where}: nonResourceURL {url!r} must start with /")
            if "*" in url[:-1]:
                errors.append(f"{where}: nonResourceURL {url!r}: '*' only as the last character")
        for gindex, group in enumerate(rule.get("resources", []) or []):
            gwhere = f"{where}.resources[{gindex}]"
            if not isinstance(group, dict):
                errors.append(f"{gwhere}: must be a mapping")
                continue
            unknown = set(group) - GROUP_RESOURCE_FIELDS
            if unknown:
                errors.append(f"{gwhere}: unknown fields {sorted(unknown)}")
            if "group" in group and not isinstance(group["group"], str):
                errors.append(f"{gwhere}: group must be a string ('' is the core group)")
            if "/" in group.get("group", ""):
                errors.append(f"{gwhere}: group must not contain '/'")
            resources = group.get("resources", []) or []
            for res in resources:
                if res.count("/") > 1 or res.startswith("/") or res.endswith("/") \
                        or ("*" in res and res not in ("*",) and not res.startswith("*/") and not res.endswith("/*")):
                    errors.append(f"{gwhere}: bad resource {res!r}")
            names = group.get("resourceNames", []) or []
            if names and any("/" in r or r == "*" or r.startswith("*/") for r in resources):
                errors.append(f"{gwhere}: resourceNames only with plain resources")
    return errors


@dataclass(frozen=True)
class Request:
    """The attributes the policy checker sees for one API request."""
    user: str
    groups: tuple[str, ...] = ("system:authenticated",)
    verb: str = "get"
    # Resource requests:
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    # Non-resource requests (resource == ""):
    path: str = ""

    @property
    def is_resource_request(self) -> bool:
        return bool(self.resource)


@dataclass
class Decision:
    level: str
    omit_stages: set[str] = field(default_factory=set)
    rule_index: int | None = None


def _matches_resource(rule: dict, req: Request) -> bool:
    if not req.is_resource_request:
        return False
    namespaces = rule.get("namespaces") or []
    if namespaces and req.namespace not in namespaces:
        return False
    groups = rule.get("resources") or []
    if not groups:
        return True
    combined = f"{req.resource}/{req.subresource}" if req.subresource else req.resource
    for group in groups:
        if group.get("group", "") != req.api_group:
            continue
        resources = group.get("resources") or []
        if not resources:
            return True
        names = group.get("resourceNames") or []
        for res in resources:
            if names and req.name not in names:
                continue
            if res == combined or res == "*":
                return True
            if req.subresource and res.startswith("*/") and req.subresource == res[2:]:
                return True
            if res.endswith("/*") and req.resource == res[:-2]:
                return True
    return False


def _matches_non_resource(rule: dict, req: Request) -> bool:
    if req.is_resource_request:
        return False
    for spec in rule.get("nonResourceURLs") or []:
        if spec == "*" or spec == req.path:
            return True
        if spec.endswith("*") and req.path.startswith(spec.rstrip("*")):
            return True
    return False


def rule_matches(rule: dict, req: Request) -> bool:
    if rule.get("users") and req.user not in rule["users"]:
        return False
    if rule.get("userGroups") and not set(req.groups) & set(rule["userGroups"]):
        return False
    if rule.get("verbs") and req.verb not in rule["verbs"]:
        return False
    if rule.get("namespaces") or rule.get("resources"):
        return _matches_resource(rule, req)
    if rule.get("nonResourceURLs"):
        return _matches_non_resource(rule, req)
    return True


def evaluate(policy: dict, req: Request) -> Decision:
    base_omit = set(policy.get("omitStages") or [])
    for index, rule in enumerate(policy["rules"]):
        if rule_matches(rule, req):
            return Decision(rule["level"], base_omit | set(rule.get("omitStages") or []), index)
    return Decision("None", base_omit, None)


def request_from_event(event: dict) -> Request:
    """The policy attributes of a recorded audit event."""
    user = event.get("user", {}) or {}
    ref = event.get("objectRef") or {}
    uri = event.get("requestURI", "")
    return Request(
        user=user.get("username", ""),
        groups=tuple(user.get("groups", []) or []),
        verb=event.get("verb", ""),
        api_group=ref.get("apiGroup", "") or "",
        resource=ref.get("resource", "") or "",
        subresource=ref.get("subresource", "") or "",
        namespace=ref.get("namespace", "") or "",
        name=ref.get("name", "") or "",
        path=uri.split("?", 1)[0],
    )


def level_needed_for_field(field_name: str) -> str:
    """The least audit level at which an event carries `field_name`."""
    root = field_name.split(".", 1)[0].split("|", 1)[0]
    if root == "requestObject":
        return "Request"
    if root == "responseObject":
        return "RequestResponse"
    return "Metadata"

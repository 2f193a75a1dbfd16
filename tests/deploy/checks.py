"""Policy checks for Ward's rendered Kubernetes manifests.

Each check takes rendered objects and returns a list of violations (strings);
an empty list means compliant. test_manifests.py asserts they are empty for
what we ship, and that they are NOT empty for deliberately broken copies.

pod_security_violations implements the Pod Security Standards "restricted"
profile (https://kubernetes.io/docs/concepts/security/pod-security-standards/,
which includes every "baseline" control) plus Ward's own requirements
(read-only root filesystem, resource requests and limits). The only
departures allowed are listed in POD_SECURITY_EXCEPTIONS, each with its reason.
"""

from __future__ import annotations

import base64
import ipaddress
import math
import re
from collections import Counter
from dataclasses import dataclass, field

WORKLOAD_KINDS = {"Pod", "Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job", "CronJob"}


# ------------------------------------------------------------ Pod Security
@dataclass(frozen=True)
class HostPathException:
    path: str
    read_only: bool  # True: every mount of it must be readOnly
    reason: str


@dataclass(frozen=True)
class WorkloadException:
    host_paths: tuple[HostPathException, ...] = ()
    # uid 0 allowed, but then no capability at all may be added.
    run_as_root: str = ""  # reason; empty = not allowed
    allowed_capabilities: frozenset[str] = field(default_factory=frozenset)


POD_SECURITY_EXCEPTIONS: dict[tuple[str, str], WorkloadException] = {
    ("DaemonSet", "ward-collector"): WorkloadException(
        host_paths=(
            HostPathException("/var/log/containers", True, "container log symlinks the collector tails"),
            HostPathException("/var/log/pods", True, "targets of /var/log/containers symlinks (containerd, CRI-O)"),
            HostPathException("/var/lib/docker/containers", True, "symlink targets on Docker/cri-dockerd nodes (optional component)"),
            HostPathException("/var/log/kubernetes/audit", True, "kube-apiserver audit log on control-plane nodes"),
            HostPathException("/var/lib/ward-collector", False, "collector checkpoints and spool; must survive restarts"),
        ),
        run_as_root=(
            "container and audit logs are root-owned 0640/0600; uid 0 with every capability "
            "dropped reads them as owner. A non-root uid would need CAP_DAC_READ_SEARCH, which "
            "runtimes do not grant to non-root processes (no ambient capabilities) and which "
            "no_new_privs (allowPrivilegeEscalation=false) keeps file capabilities from granting."
        ),
        allowed_capabilities=frozenset(),
    ),
}

RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
    "persistentVolumeClaim", "projected", "secret",
}
VOLUME_NON_TYPE_KEYS = {"name"}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def workloads(objects: list[dict]) -> list[dict]:
    return [o for o in objects if o["kind"] in WORKLOAD_KINDS]


def pod_spec_of(obj: dict) -> dict:
    if obj["kind"] == "Pod":
        return obj["spec"]
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def pod_metadata_of(obj: dict) -> dict:
    if obj["kind"] == "Pod":
        return obj["metadata"]
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"].get("metadata", {})
    return obj["spec"]["template"].get("metadata", {})


def _containers(spec: dict):
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(key, []) or []:
            yield key, container


def pod_security_violations(obj: dict, exceptions=POD_SECURITY_EXCEPTIONS) -> list[str]:
    """PSS 'restricted' (and therefore 'baseline') for one workload."""
    name = f"{obj['kind']}/{obj['metadata']['name']}"
    exc = exceptions.get((obj["kind"], obj["metadata"]["name"]), WorkloadException())
    spec = pod_spec_of(obj)
    meta = pod_metadata_of(obj)
    pod_sc = spec.get("securityContext", {}) or {}
    out: list[str] = []

    # baseline: host namespaces
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            out.append(f"{name}: {key} must not be true")
    # baseline: host ports
    for _, c in _containers(spec):
        for port in c.get("ports", []) or []:
            if port.get("hostPort", 0):
                out.append(f"{name}/{c['name']}: hostPort {port['hostPort']} is not allowed")
    # baseline: sysctls
    for sysctl in pod_sc.get("sysctls", []) or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            out.append(f"{name}: unsafe sysctl {sysctl.get('name')}")
    # baseline: AppArmor (annotations and fields)
    for key, value in (meta.get("annotations") or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/"):
            if not (value == "runtime/default" or value.startswith("localhost/")):
                out.append(f"{name}: AppArmor profile {value} is not allowed")

    def apparmor_ok(sc: dict, where: str):
        profile = (sc or {}).get("appArmorProfile")
        if profile and profile.get("type") not in ("RuntimeDefault", "Localhost"):
            out.append(f"{where}: appArmorProfile {profile.get('type')} is not allowed")

    def selinux_ok(sc: dict, where: str):
        opts = (sc or {}).get("seLinuxOptions")
        if not opts:
            return
        if opts.get("type", "") not in SELINUX_TYPES:
            out.append(f"{where}: seLinuxOptions.type {opts.get('type')} is not allowed")
        if opts.get("user") or opts.get("role"):
            out.append(f"{where}: seLinuxOptions.user/role must not be set")

    apparmor_ok(pod_sc, name)
    selinux_ok(pod_sc, name)
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess"):
        out.append(f"{name}: windowsOptions.hostProcess must not be true")

    # baseline + restricted: volumes
    host_path_volumes: dict[str, str] = {}
    allowed_paths = {hp.path: hp for hp in exc.host_paths}
    for volume in spec.get("volumes", []) or []:
        types = set(volume) - VOLUME_NON_TYPE_KEYS
        for vtype in types:
            if vtype == "hostPath":
                path = volume["hostPath"]["path"].rstrip("/") or "/"
                if path not in allowed_paths:
                    out.append(f"{name}: hostPath volume {path} is not allowed")
                host_path_volumes[volume["name"]] = path
            elif vtype not in RESTRICTED_VOLUME_TYPES:
                out.append(f"{name}: volume type {vtype} ({volume['name']}) is not allowed")

    # restricted: pod-level seccomp / runAsNonRoot as defaults for containers
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    if pod_seccomp == "Unconfined":
        out.append(f"{name}: pod seccompProfile Unconfined")

    for kind, c in _containers(spec):
        where = f"{name}/{c['name']}"
        sc = c.get("securityContext", {}) or {}
        if sc.get("privileged"):
            out.append(f"{where}: privileged must not be true")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            out.append(f"{where}: windowsOptions.hostProcess must not be true")
        if sc.get("procMount", "Default") != "Default":
            out.append(f"{where}: procMount must be Default")
        apparmor_ok(sc, where)
        selinux_ok(sc, where)
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{where}: allowPrivilegeEscalation must be false")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{where}: seccompProfile must be RuntimeDefault or Localhost (is {seccomp})")
        caps = sc.get("capabilities", {}) or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{where}: capabilities must drop ALL")
        # Root is only tolerated with an empty capability set.
        root_allowed = bool(exc.run_as_root)
        allowed_adds = set(exc.allowed_capabilities) if root_allowed else {"NET_BIND_SERVICE"} | set(exc.allowed_capabilities)
        for cap in caps.get("add") or []:
            if cap not in allowed_adds:
                out.append(f"{where}: capability {cap} may not be added")
        run_as_non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        run_as_user = sc.get("runAsUser", pod_sc.get("runAsUser"))
        if not root_allowed:
            if run_as_non_root is not True:
                out.append(f"{where}: runAsNonRoot must be true")
            if run_as_user == 0:
                out.append(f"{where}: runAsUser must not be 0")
        if kind == "ephemeralContainers":
            continue
        # Ward: immutable root filesystem, bounded resources.
        if sc.get("readOnlyRootFilesystem") is not True:
            out.append(f"{where}: readOnlyRootFilesystem must be true")
        resources = c.get("resources", {}) or {}
        for section in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in (resources.get(section) or {}):
                    out.append(f"{where}: resources.{section}.{resource} is missing")
        # Exception hostPaths: only mounted as declared.
        for mount in c.get("volumeMounts", []) or []:
            path = host_path_volumes.get(mount["name"])
            if path is None:
                continue
            rule = allowed_paths.get(path)
            if rule and rule.read_only and mount.get("readOnly") is not True:
                out.append(f"{where}: hostPath {path} must be mounted readOnly")
            if mount.get("mountPropagation", "None") != "None":
                out.append(f"{where}: hostPath {path} must not use mount propagation")
            if mount.get("subPath") or mount.get("subPathExpr"):
                out.append(f"{where}: hostPath {path} must not use subPath")
    return out


# ------------------------------------------------------------------- RBAC
COLLECTOR_SA = ("ward-system", "ward-collector")
COLLECTOR_ALLOWED_RESOURCES = {"pods", "namespaces", "nodes"}
COLLECTOR_ALLOWED_VERBS = {"get", "list", "watch"}


def rbac_violations(objects: list[dict]) -> list[str]:
    out: list[str] = []
    roles = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
             for o in objects if o["kind"] in ("Role", "ClusterRole")}
    bindings = [o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    for key, role in roles.items():
        where = f"{key[0]}/{key[2]}"
        if role.get("aggregationRule"):
            out.append(f"{where}: aggregationRule would pull in other roles' rules")
        for rule in role.get("rules", []) or []:
            if rule.get("nonResourceURLs"):
                out.append(f"{where}: nonResourceURLs are not needed")
            if set(rule.get("apiGroups", [])) != {""}:
                out.append(f"{where}: only the core API group is allowed, not {rule.get('apiGroups')}")
            extra_resources = set(rule.get("resources", [])) - COLLECTOR_ALLOWED_RESOURCES
            if extra_resources:
                out.append(f"{where}: resources {sorted(extra_resources)} are not allowed")
            extra_verbs = set(rule.get("verbs", [])) - COLLECTOR_ALLOWED_VERBS
            if extra_verbs:
                out.append(f"{where}: verbs {sorted(extra_verbs)} are not allowed")
    for binding in bindings:
        where = f"{binding['kind']}/{binding['metadata']['name']}"
        ref = binding["roleRef"]
        ref_ns = binding["metadata"].get("namespace", "") if ref["kind"] == "Role" else ""
        if (ref["kind"], ref_ns, ref["name"]) not in roles:
            out.append(f"{where}: binds {ref['kind']}/{ref['name']}, which Ward does not define")
        for subject in binding.get("subjects", []) or []:
            if subject.get("kind") != "ServiceAccount":
                out.append(f"{where}: subject {subject.get('kind')}/{subject.get('name')} is not a service account")
                continue
            sa = (subject.get("namespace", binding["metadata"].get("namespace", "")), subject["name"])
            if sa != COLLECTOR_SA:
                out.append(f"{where}: binds service account {sa[0]}/{sa[1]}; only the collector gets RBAC")
    return out


def service_account_violations(objects: list[dict]) -> list[str]:
    out: list[str] = []
    accounts = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ServiceAccount"}
    for name, sa in accounts.items():
        if sa.get("automountServiceAccountToken") is not False:
            out.append(f"ServiceAccount/{name}: automountServiceAccountToken must default to false")
    for workload in workloads(objects):
        spec = pod_spec_of(workload)
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        sa_name = spec.get("serviceAccountName", "default")
        if sa_name not in accounts:
            out.append(f"{where}: uses service account {sa_name}, which Ward does not define")
            continue
        mounts = spec.get("automountServiceAccountToken", accounts[sa_name].get("automountServiceAccountToken", True))
        needs_token = "--kube-metadata" in " ".join(
            " ".join(c.get("args", []) + c.get("command", [])) for c in spec.get("containers", []))
        if mounts and not needs_token:
            out.append(f"{where}: mounts a service account token it does not need")
        if needs_token and (sa_name, "ward-system") != (COLLECTOR_SA[1], COLLECTOR_SA[0]):
            out.append(f"{where}: only the collector may use the API")
    return out


# ---------------------------------------------------------- NetworkPolicy
@dataclass(frozen=True)
class Peer:
    """A traffic source or destination for the evaluator."""
    namespace: str | None = None  # None: not a pod (host network / outside)
    labels: tuple[tuple[str, str], ...] = ()
    namespace_labels: tuple[tuple[str, str], ...] = ()
    ip: str = "10.244.1.23"


def selector_matches(selector: dict | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _peer_matches(rule_peer: dict, peer: Peer, policy_ns: str) -> bool:
    if "ipBlock" in rule_peer:
        block = rule_peer["ipBlock"]
        ip = ipaddress.ip_address(peer.ip)
        if ip not in ipaddress.ip_network(block["cidr"]):
            return False
        return not any(ip in ipaddress.ip_network(e) for e in block.get("except", []) or [])
    if peer.namespace is None:
        return False  # selectors only ever match pods
    ns_labels = dict(peer.namespace_labels)
    ns_labels.setdefault("kubernetes.io/metadata.name", peer.namespace)
    if "namespaceSelector" in rule_peer:
        if not selector_matches(rule_peer["namespaceSelector"], ns_labels):
            return False
    elif peer.namespace != policy_ns:
        return False
    if "podSelector" in rule_peer:
        return selector_matches(rule_peer["podSelector"], dict(peer.labels))
    return True


def _port_matches(rule_ports: list[dict] | None, port: int, protocol: str) -> bool:
    if not rule_ports:
        return True
    for p in rule_ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        if "port" not in p:
            return True
        if isinstance(p["port"], str):
            raise ValueError("named ports are not used in Ward's policies")
        end = p.get("endPort", p["port"])
        if p["port"] <= port <= end:
            return True
    return False


def network_allows(objects: list[dict], direction: str, pod: Peer, other: Peer, port: int,
                   protocol: str = "TCP") -> bool:
    """Does NetworkPolicy allow traffic between `pod` (selected side) and
    `other` in `direction` ("Ingress": other -> pod; "Egress": pod -> other)?
    Unselected pods are open, selected pods are open only where a rule says so."""
    key = "ingress" if direction == "Ingress" else "egress"
    peer_key = "from" if direction == "Ingress" else "to"
    selected = False
    for policy in (o for o in objects if o["kind"] == "NetworkPolicy"):
        ns = policy["metadata"]["namespace"]
        spec = policy["spec"]
        types = spec.get("policyTypes") or (["Ingress", "Egress"] if "egress" in spec else ["Ingress"])
        if ns != pod.namespace or direction not in types:
            continue
        if not selector_matches(spec.get("podSelector", {}), dict(pod.labels)):
            continue
        selected = True
        for rule in spec.get(key, []) or []:
            peers = rule.get(peer_key)
            if peers and not any(_peer_matches(p, other, ns) for p in peers):
                continue
            if _port_matches(rule.get("ports"), port, protocol):
                return True
    return not selected


WARD_NS = "ward-system"
COLLECTOR = Peer(WARD_NS, (("app.kubernetes.io/name", "ward"), ("app.kubernetes.io/component", "collector")), ip="10.244.1.10")
INDEXER = Peer(WARD_NS, (("app.kubernetes.io/name", "ward"), ("app.kubernetes.io/component", "indexer")), ip="10.244.2.20")


def network_policy_violations(objects: list[dict]) -> list[str]:
    out: list[str] = []
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    default_deny = [p for p in policies
                    if p["spec"].get("podSelector") == {}
                    and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
                    and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    if not default_deny:
        out.append("no default-deny NetworkPolicy (podSelector {}, Ingress+Egress, no rules)")

    stranger = Peer(WARD_NS, (("app", "something-else"),), ip="10.244.3.30")
    other_ns = Peer("default", (("app", "web"),), ip="10.244.4.40")
    api_ns = Peer("dashboards", (("app", "grafana"),), (("ward/api-access", "true"),), ip="10.244.5.50")
    internet = Peer(None, ip="203.0.113.7")
    expectations = [
        # (description, direction, pod, other, port, expected)
        ("collector -> indexer ingest", "Egress", COLLECTOR, INDEXER, 7171, True),
        ("indexer accepts collector ingest", "Ingress", INDEXER, COLLECTOR, 7171, True),
        ("other ward-system pod -> indexer ingest", "Ingress", INDEXER, stranger, 7171, False),
        ("other namespace -> indexer ingest", "Ingress", INDEXER, other_ns, 7171, False),
        ("API-access namespace -> indexer ingest", "Ingress", INDEXER, api_ns, 7171, False),
        ("API-access namespace -> indexer API", "Ingress", INDEXER, api_ns, 7172, True),
        ("unlabelled namespace -> indexer API", "Ingress", INDEXER, other_ns, 7172, False),
        ("outside address -> indexer ingest", "Ingress", INDEXER, internet, 7171, False),
        ("outside address -> indexer API", "Ingress", INDEXER, internet, 7172, False),
        ("collector -> indexer API", "Egress", COLLECTOR, INDEXER, 7172, False),
        ("collector -> internet 443", "Egress", COLLECTOR, internet, 443, False),
        ("collector -> other pod", "Egress", COLLECTOR, other_ns, 8080, False),
        ("indexer -> anywhere", "Egress", INDEXER, internet, 443, False),
        ("indexer -> collector", "Egress", INDEXER, COLLECTOR, 7173, False),
        ("collector -> cluster DNS", "Egress", COLLECTOR,
         Peer("kube-system", (("k8s-app", "kube-dns"),), ip="10.244.0.5"), 53, True),
        ("anything -> collector", "Ingress", COLLECTOR, other_ns, 7173, False),
    ]
    for desc, direction, pod, other, port, expected in expectations:
        got = network_allows(objects, direction, pod, other, port)
        if got != expected:
            out.append(f"network: {desc} on port {port}: {'allowed' if got else 'denied'}, "
                       f"expected {'allowed' if expected else 'denied'}")
    # The API server webhook and the collectors' API calls come from the
    # control plane: ipBlocks only, never 0.0.0.0/0.
    for policy in policies:
        for key, peer_key in (("ingress", "from"), ("egress", "to")):
            for rule in policy["spec"].get(key, []) or []:
                if not rule.get("ports"):
                    out.append(f"NetworkPolicy/{policy['metadata']['name']}: a {key} rule without ports")
                if not rule.get(peer_key):
                    out.append(f"NetworkPolicy/{policy['metadata']['name']}: a {key} rule without peers")
                for peer in rule.get(peer_key, []) or []:
                    cidr = (peer.get("ipBlock") or {}).get("cidr")
                    if cidr and ipaddress.ip_network(cidr).prefixlen < 8:
                        out.append(f"NetworkPolicy/{policy['metadata']['name']}: ipBlock {cidr} is far too wide")
    return out


# ----------------------------------------------------------------- Secrets
PLACEHOLDER = re.compile(r"REPLACE_ME|PLACEHOLDER|CHANGE_ME|EXAMPLE", re.IGNORECASE)
PRIVATE_KEY = re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")
CANDIDATE_TOKEN = re.compile(r"[A-Za-z0-9+/_=-]{24,}")


def shannon_entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def looks_like_secret(value: str) -> bool:
    """True for strings that look like real credentials: private keys, or long
    high-entropy tokens that are not marked as placeholders."""
    if PRIVATE_KEY.search(value):
        return True
    for token in CANDIDATE_TOKEN.findall(value):
        if PLACEHOLDER.search(token):
            continue
        if "/" in token and token.count("/") > 2:
            continue  # a path or URL, not a token
        segments = [seg for seg in re.split(r"[-_=/+]", token) if seg]
        if len(segments) > 1 and all(seg.isdigit() or (seg.isalpha() and seg.islower()) or len(seg) <= 4
                                     for seg in segments):
            continue  # hyphenated words and numbers: a flag or a name, not a token
        mixed = sum(bool(re.search(p, token)) for p in (r"[a-z]", r"[A-Z]", r"[0-9]"))
        if mixed >= 2 and shannon_entropy(token) >= 4.0:
            return True
    return False


def secret_violations(objects: list[dict]) -> list[str]:
    out: list[str] = []
    for obj in objects:
        if obj["kind"] != "Secret":
            continue
        name = obj["metadata"]["name"]
        values = dict(obj.get("stringData") or {})
        for key, encoded in (obj.get("data") or {}).items():
            values[key] = base64.b64decode(encoded).decode("utf-8", "replace")
        for key, value in values.items():
            if looks_like_secret(value):
                out.append(f"Secret/{name}: key {key} holds a real-looking credential")
            elif value.strip() and not PLACEHOLDER.search(value):
                out.append(f"Secret/{name}: key {key} is not a clearly marked placeholder")
    return out

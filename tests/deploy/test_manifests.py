"""Render deploy/kubernetes, validate it against the Kubernetes API schemas,
and prove it meets Ward's security requirements (and that the checks bite)."""

from __future__ import annotations

import base64
import copy
import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml

import checks
import kustomize_lite
from conftest import BASE, COMPONENTS, DEPLOY, KUBERNETES, PRODUCTION, write_placeholder_secrets

# Kubernetes versions the manifests must be valid for: the oldest still
# commonly run and the newest the installed kubernetes-validate knows.
K8S_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]

# cert-manager CRDs are not in kubernetes-validate; they are checked against
# the fields of cert-manager.io/v1 that Ward uses (strict: unknown fields fail).
CERT_MANAGER_FIELDS = {
    "Issuer": {"selfSigned", "ca"},
    "Certificate": {
        "isCA", "commonName", "secretName", "duration", "renewBefore", "dnsNames",
        "usages", "privateKey", "issuerRef",
    },
}
CERT_MANAGER_USAGES = {"server auth", "client auth", "digital signature", "key encipherment", "cert sign"}


def ids(objects):
    return {kustomize_lite.object_id(o) for o in objects}


def by_kind(objects, kind, name=None):
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    return found


def one(objects, kind, name):
    found = by_kind(objects, kind, name)
    assert len(found) == 1, f"expected exactly one {kind}/{name}, found {len(found)}"
    return found[0]


# ----------------------------------------------------------------- render
def test_base_renders_every_listed_file(rendered_base):
    spec = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    for entry in spec["resources"]:
        for obj in kustomize_lite.load_yaml_documents(BASE / entry):
            obj_id = (obj["apiVersion"], obj["kind"],
                      "" if obj["kind"] in kustomize_lite.CLUSTER_SCOPED_KINDS else spec["namespace"],
                      obj["metadata"]["name"])
            assert obj_id in ids(rendered_base), f"{entry}: {obj_id} missing from the rendered base"


def test_no_orphan_manifest_files(kubernetes_copy):
    """Every YAML file under deploy/kubernetes is used by some kustomization,
    so nothing ships that the tests never render."""
    used = set()
    for kfile in kubernetes_copy.rglob("kustomization.yaml"):
        used |= kustomize_lite.files_used(kfile.parent)
    for path in kubernetes_copy.rglob("*.y*ml"):
        assert path.resolve() in used, f"{path.relative_to(kubernetes_copy)} is in no kustomization"


def test_every_kustomization_renders(rendered_all):
    assert set(rendered_all) >= {"base", "overlays/production", "components/cert-manager",
                                 "components/docker-runtime"}
    for name, objects in rendered_all.items():
        assert objects, f"{name} rendered nothing"


def test_namespace_is_applied(rendered_production):
    for obj in rendered_production:
        if obj["kind"] in kustomize_lite.CLUSTER_SCOPED_KINDS:
            assert "namespace" not in obj["metadata"], kustomize_lite.object_id(obj)
        else:
            assert obj["metadata"]["namespace"] == "ward-system", kustomize_lite.object_id(obj)
    assert one(rendered_production, "Namespace", "ward-system")


def test_production_overlay_refuses_to_build_without_secret_files(tmp_path):
    """Fail closed: no secret files, no manifests (instead of an install with
    missing credentials)."""
    root = tmp_path / "kubernetes"
    shutil.copytree(KUBERNETES, root)
    for f in (root / "overlays" / "production" / "secrets").iterdir():
        if not f.name.endswith(".example") and f.name != ".gitignore":
            f.unlink()
    with pytest.raises(kustomize_lite.KustomizeError, match="does not exist"):
        kustomize_lite.render(root / "overlays" / "production")


def test_production_overlay_contents(rendered_production):
    tokens = one(rendered_production, "Secret", "ward-tokens")
    assert set(tokens["data"]) == {"tokens.yaml"}
    collector_token = one(rendered_production, "Secret", "ward-collector-token")
    assert set(collector_token["data"]) == {"token"}
    # The collector's token is one of the indexer's tokens, with the collector role.
    token = base64.b64decode(collector_token["data"]["token"]).decode().strip()
    lines = base64.b64decode(tokens["data"]["tokens.yaml"]).decode().splitlines()
    assert f"collector:{token}" in lines
    # cert-manager creates both TLS Secrets the workloads mount.
    secret_names = {c["spec"]["secretName"] for c in by_kind(rendered_production, "Certificate")}
    assert {"ward-indexer-tls", "ward-collector-tls"} <= secret_names
    for workload in checks.workloads(rendered_production):
        for container in checks.pod_spec_of(workload)["containers"]:
            assert container["image"].startswith("registry.example.invalid/ward"), container["image"]


def test_secret_references_resolve(rendered_production):
    """Every Secret/ConfigMap a workload mounts or reads exists in the render."""
    secrets = {o["metadata"]["name"] for o in by_kind(rendered_production, "Secret")}
    secrets |= {c["spec"]["secretName"] for c in by_kind(rendered_production, "Certificate")}
    configmaps = {o["metadata"]["name"] for o in by_kind(rendered_production, "ConfigMap")}
    for workload in checks.workloads(rendered_production):
        spec = checks.pod_spec_of(workload)
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, volume
        for container in spec["containers"]:
            for env in container.get("env", []):
                ref = (env.get("valueFrom") or {}).get("configMapKeyRef")
                if ref:
                    assert ref["name"] in configmaps, env


def _normalise(objects):
    out = {}
    for obj in objects:
        obj = copy.deepcopy(obj)
        if obj["kind"] == "Secret":  # kubectl wraps base64 lines; compare the bytes
            obj["data"] = {k: base64.b64decode(v) for k, v in obj.get("data", {}).items()}
        out[kustomize_lite.object_id(obj)] = obj
    return out


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed: cross-check only")
def test_renderer_matches_kubectl_kustomize(kubernetes_copy, rendered_all):
    """Where kubectl exists, the pure-Python renderer must agree with it exactly."""
    for name, mine in rendered_all.items():
        directory = kubernetes_copy / name if not name.startswith("components/") \
            else kubernetes_copy / "overlays" / f"test-{name.split('/', 1)[1]}"
        result = subprocess.run(["kubectl", "kustomize", str(directory)],
                                capture_output=True, text=True, check=True)
        theirs = [o for o in yaml.safe_load_all(result.stdout) if o]
        assert _normalise(mine) == _normalise(theirs), name


# --------------------------------------------------------------- validate
def _validate(objects, version):
    errors = []
    for obj in objects:
        group = obj["apiVersion"].split("/")[0]
        if group == "cert-manager.io":
            errors += _validate_cert_manager(obj)
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{kustomize_lite.object_id(obj)} @ {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{kustomize_lite.object_id(obj)}: {exc.message}")
    return errors


def _validate_cert_manager(obj):
    where = kustomize_lite.object_id(obj)
    errors = []
    if obj["apiVersion"] != "cert-manager.io/v1" or obj["kind"] not in CERT_MANAGER_FIELDS:
        return [f"{where}: unexpected cert-manager object"]
    if set(obj) - {"apiVersion", "kind", "metadata", "spec"}:
        errors.append(f"{where}: unknown top-level fields")
    unknown = set(obj["spec"]) - CERT_MANAGER_FIELDS[obj["kind"]]
    if unknown:
        errors.append(f"{where}: unknown spec fields {sorted(unknown)}")
    if obj["kind"] == "Certificate":
        spec = obj["spec"]
        for required in ("secretName", "issuerRef"):
            if required not in spec:
                errors.append(f"{where}: spec.{required} is required")
        if set(spec.get("usages", [])) - CERT_MANAGER_USAGES:
            errors.append(f"{where}: unknown usages")
        if set(spec["issuerRef"]) - {"name", "kind", "group"}:
            errors.append(f"{where}: unknown issuerRef fields")
        if set(spec.get("privateKey", {})) - {"algorithm", "size", "encoding", "rotationPolicy"}:
            errors.append(f"{where}: unknown privateKey fields")
    return errors


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_is_valid_kubernetes(rendered_all, version):
    errors = []
    for name, objects in rendered_all.items():
        errors += [f"[{name}] {e}" for e in _validate(objects, version)]
    assert not errors, "\n".join(errors)


def test_validator_is_strict(rendered_base):
    """Unknown fields must fail validation (typos in securityContext are the
    classic way a hardening silently does nothing)."""
    daemonset = copy.deepcopy(one(rendered_base, "DaemonSet", "ward-collector"))
    daemonset["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    assert _validate([daemonset], K8S_VERSIONS[-1])


def test_cert_manager_issuer_chain(rendered_all):
    objects = rendered_all["components/cert-manager"]
    issuers = {o["metadata"]["name"]: o for o in by_kind(objects, "Issuer")}
    for cert in by_kind(objects, "Certificate"):
        assert cert["spec"]["issuerRef"]["name"] in issuers, cert["metadata"]["name"]
        assert cert["spec"]["issuerRef"]["kind"] == "Issuer"  # namespaced: not trusted cluster-wide
    indexer = one(objects, "Certificate", "ward-indexer-tls")["spec"]
    assert "ward-indexer-ingest.ward-system.svc" in indexer["dnsNames"]
    assert "server auth" in indexer["usages"]
    assert "client auth" in one(objects, "Certificate", "ward-collector-tls")["spec"]["usages"]


# --------------------------------------------------------------- security
def test_pod_security_restricted_with_documented_exceptions(rendered_all):
    errors = []
    for name, objects in rendered_all.items():
        for workload in checks.workloads(objects):
            errors += [f"[{name}] {v}" for v in checks.pod_security_violations(workload)]
    assert not errors, "\n".join(errors)


def test_indexer_is_fully_restricted_without_exceptions(rendered_base):
    indexer = one(rendered_base, "StatefulSet", "ward-indexer")
    assert checks.pod_security_violations(indexer, exceptions={}) == []
    sc = indexer["spec"]["template"]["spec"]["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532 and sc["fsGroup"] == 65532


def test_collector_exceptions_are_exactly_the_documented_ones(rendered_base):
    """Without its exceptions the collector fails on exactly: its hostPaths and
    running as uid 0. Nothing else."""
    collector = one(rendered_base, "DaemonSet", "ward-collector")
    violations = checks.pod_security_violations(collector, exceptions={})
    host_paths = {v.split("hostPath volume ")[1].split(" ")[0] for v in violations if "hostPath volume" in v}
    assert host_paths == {"/var/log/containers", "/var/log/pods", "/var/log/kubernetes/audit",
                          "/var/lib/ward-collector"}
    others = [v for v in violations if "hostPath volume" not in v]
    assert sorted(others) == sorted([
        "DaemonSet/ward-collector/collector: runAsNonRoot must be true",
        "DaemonSet/ward-collector/collector: runAsUser must not be 0",
    ]), others
    # Root, but with no capability at all.
    caps = collector["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]
    assert caps == {"drop": ["ALL"]}


def test_indexer_probes_and_storage(rendered_base):
    indexer = one(rendered_base, "StatefulSet", "ward-indexer")
    container = indexer["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
        assert container[probe]["httpGet"]["port"] == "api"
    assert indexer["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert indexer["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    args = container["args"]
    for flag in ("--listen=0.0.0.0:7171", "--api-listen=0.0.0.0:7172", "--tls-cert=/etc/ward/tls/tls.crt",
                 "--tls-key=/etc/ward/tls/tls.key", "--client-ca=/etc/ward/tls/ca.crt",
                 "--tokens=/etc/ward/tokens/tokens.yaml"):
        assert flag in args


def test_services_expose_the_right_ports(rendered_base):
    ingest = one(rendered_base, "Service", "ward-indexer-ingest")
    api = one(rendered_base, "Service", "ward-indexer-api")
    assert [p["port"] for p in ingest["spec"]["ports"]] == [7171]
    assert [p["port"] for p in api["spec"]["ports"]] == [7172]
    for service in (ingest, api):
        assert service["spec"]["type"] == "ClusterIP"  # nothing exposed outside the cluster


def test_collector_mounts_and_args(rendered_base):
    collector = one(rendered_base, "DaemonSet", "ward-collector")
    spec = collector["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["state"]["hostPath"] == {"path": "/var/lib/ward-collector", "type": "DirectoryOrCreate"}
    args = spec["containers"][0]["args"]
    assert args[0] == "collector"
    assert "--indexer=https://ward-indexer-ingest.ward-system.svc:7171" in args
    assert "--node=$(NODE_NAME)" in args
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    tolerated = {t["key"] for t in spec["tolerations"]}
    assert "node-role.kubernetes.io/control-plane" in tolerated


def test_rbac_is_read_only_pods_namespaces_nodes(rendered_all):
    for name, objects in rendered_all.items():
        assert checks.rbac_violations(objects) == [], name
    role = one(rendered_all["base"], "ClusterRole", "ward-collector")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods", "namespaces", "nodes"],
                              "verbs": ["get", "list", "watch"]}]


def test_indexer_has_no_rbac_and_no_token(rendered_base):
    for binding in by_kind(rendered_base, "RoleBinding") + by_kind(rendered_base, "ClusterRoleBinding"):
        for subject in binding.get("subjects", []):
            assert subject["name"] != "ward-indexer", binding["metadata"]["name"]
    assert one(rendered_base, "ServiceAccount", "ward-indexer")["automountServiceAccountToken"] is False
    spec = one(rendered_base, "StatefulSet", "ward-indexer")["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert checks.service_account_violations(rendered_base) == []


def test_network_policies(rendered_all):
    for name, objects in rendered_all.items():
        assert checks.network_policy_violations(objects) == [], name


def test_no_real_secrets_in_rendered_output(rendered_all):
    for name, objects in rendered_all.items():
        assert checks.secret_violations(objects) == [], name


def test_no_real_secrets_anywhere_in_deploy():
    """Scan every file under deploy/ (examples, kubeconfig, docs) for private
    keys and credential-looking strings."""
    offenders = []
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            if checks.looks_like_secret(text):
                offenders.append(str(path.relative_to(DEPLOY)))
    assert not offenders, offenders


# ---------------------------------------------------- the checks catch faults
def _mutate(objects, kind, name, fn):
    objects = copy.deepcopy(objects)
    fn(one(objects, kind, name))
    return objects


def _container(obj):
    return checks.pod_spec_of(obj)["containers"][0]


MUTATIONS = {
    "privileged collector": ("DaemonSet", "ward-collector",
                             lambda o: _container(o)["securityContext"].update(privileged=True)),
    "privilege escalation": ("StatefulSet", "ward-indexer",
                             lambda o: _container(o)["securityContext"].update(allowPrivilegeEscalation=True)),
    "indexer as root": ("StatefulSet", "ward-indexer",
                        lambda o: _container(o)["securityContext"].update(runAsUser=0)),
    "indexer runAsNonRoot off": ("StatefulSet", "ward-indexer",
                                 lambda o: (_container(o)["securityContext"].pop("runAsNonRoot"),
                                            checks.pod_spec_of(o)["securityContext"].pop("runAsNonRoot"))),
    "hostNetwork": ("DaemonSet", "ward-collector", lambda o: checks.pod_spec_of(o).update(hostNetwork=True)),
    "hostPID": ("StatefulSet", "ward-indexer", lambda o: checks.pod_spec_of(o).update(hostPID=True)),
    "hostPort": ("DaemonSet", "ward-collector",
                 lambda o: _container(o)["ports"][0].update(hostPort=7173)),
    "extra capability on root collector": ("DaemonSet", "ward-collector",
                                           lambda o: _container(o)["securityContext"]["capabilities"].update(add=["DAC_READ_SEARCH"])),
    "SYS_ADMIN on indexer": ("StatefulSet", "ward-indexer",
                             lambda o: _container(o)["securityContext"]["capabilities"].update(add=["SYS_ADMIN"])),
    "capabilities not dropped": ("StatefulSet", "ward-indexer",
                                 lambda o: _container(o)["securityContext"]["capabilities"].update(drop=[])),
    "seccomp unconfined": ("StatefulSet", "ward-indexer",
                           lambda o: _container(o)["securityContext"].update(seccompProfile={"type": "Unconfined"})),
    "writable root filesystem": ("DaemonSet", "ward-collector",
                                 lambda o: _container(o)["securityContext"].update(readOnlyRootFilesystem=False)),
    "no memory limit": ("StatefulSet", "ward-indexer",
                        lambda o: _container(o)["resources"]["limits"].pop("memory")),
    "hostPath /etc": ("DaemonSet", "ward-collector",
                      lambda o: checks.pod_spec_of(o)["volumes"].append(
                          {"name": "etc", "hostPath": {"path": "/etc"}})),
    "hostPath on indexer": ("StatefulSet", "ward-indexer",
                            lambda o: checks.pod_spec_of(o)["volumes"].append(
                                {"name": "logs", "hostPath": {"path": "/var/log/pods"}})),
    "log mount writable": ("DaemonSet", "ward-collector",
                           lambda o: [m.update(readOnly=False) for m in _container(o)["volumeMounts"]
                                      if m["name"] == "var-log-pods"]),
    "bidirectional propagation": ("DaemonSet", "ward-collector",
                                  lambda o: [m.update(mountPropagation="Bidirectional")
                                             for m in _container(o)["volumeMounts"] if m["name"] == "state"]),
    "nfs volume": ("StatefulSet", "ward-indexer",
                   lambda o: checks.pod_spec_of(o)["volumes"].append(
                       {"name": "n", "nfs": {"server": "nfs.example.invalid", "path": "/"}})),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_pod_security_checker_catches(rendered_base, mutation):
    kind, name, fn = MUTATIONS[mutation]
    broken = _mutate(rendered_base, kind, name, fn)
    violations = [v for w in checks.workloads(broken) for v in checks.pod_security_violations(w)]
    assert violations, f"checker missed: {mutation}"


RBAC_MUTATIONS = {
    "create verb": lambda objs: one(objs, "ClusterRole", "ward-collector")["rules"][0]["verbs"].append("create"),
    "secrets": lambda objs: one(objs, "ClusterRole", "ward-collector")["rules"][0]["resources"].append("secrets"),
    "pods/exec": lambda objs: one(objs, "ClusterRole", "ward-collector")["rules"].append(
        {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get"]}),
    "wildcard group": lambda objs: one(objs, "ClusterRole", "ward-collector")["rules"][0].update(apiGroups=["*"]),
    "indexer binding": lambda objs: objs.append({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "ward-indexer", "namespace": "ward-system"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "ward-collector"},
        "subjects": [{"kind": "ServiceAccount", "name": "ward-indexer", "namespace": "ward-system"}]}),
    "cluster-admin": lambda objs: one(objs, "ClusterRoleBinding", "ward-collector")["roleRef"].update(
        name="cluster-admin"),
}


@pytest.mark.parametrize("mutation", sorted(RBAC_MUTATIONS))
def test_rbac_checker_catches(rendered_base, mutation):
    broken = copy.deepcopy(rendered_base)
    RBAC_MUTATIONS[mutation](broken)
    assert checks.rbac_violations(broken), f"checker missed: {mutation}"


def test_service_account_checker_catches(rendered_base):
    broken = _mutate(rendered_base, "StatefulSet", "ward-indexer",
                     lambda o: checks.pod_spec_of(o).update(automountServiceAccountToken=True))
    assert checks.service_account_violations(broken)


NETPOL_MUTATIONS = {
    "no default deny": lambda objs: objs.remove(one(objs, "NetworkPolicy", "ward-default-deny")),
    "ingest from any pod": lambda objs: one(objs, "NetworkPolicy", "ward-indexer")["spec"]["ingress"][0].update(
        {"from": [{"podSelector": {}}]}),
    "ingest from every namespace": lambda objs: one(objs, "NetworkPolicy", "ward-indexer")["spec"]["ingress"][0].update(
        {"from": [{"namespaceSelector": {}}]}),
    "api port open": lambda objs: one(objs, "NetworkPolicy", "ward-indexer")["spec"]["ingress"][2].pop("from"),
    "collector egress anywhere": lambda objs: one(objs, "NetworkPolicy", "ward-collector")["spec"]["egress"].append(
        {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443, "protocol": "TCP"}]}),
    "indexer egress": lambda objs: one(objs, "NetworkPolicy", "ward-indexer")["spec"].update(
        policyTypes=["Ingress", "Egress"], egress=[{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
                                                    "ports": [{"port": 443}]}]),
}


@pytest.mark.parametrize("mutation", sorted(NETPOL_MUTATIONS))
def test_network_policy_checker_catches(rendered_base, mutation):
    broken = copy.deepcopy(rendered_base)
    NETPOL_MUTATIONS[mutation](broken)
    assert checks.network_policy_violations(broken), f"checker missed: {mutation}"


def test_secret_checker_catches_real_looking_values():
    real = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"},
            "stringData": {"token": "q8Zt3kP0vX9mW2rL7yB4nH6cJ1sD5fG0aE"}}
    assert checks.secret_violations([real])
    unmarked = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"},
                "data": {"token": base64.b64encode(b"hunter2").decode()}}
    assert checks.secret_violations([unmarked])
    key = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n"
    assert checks.looks_like_secret(key)
    placeholder = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"},
                   "stringData": {"token": "REPLACE_ME_collector_token"}}
    assert checks.secret_violations([placeholder]) == []


def test_example_secret_files_are_placeholders():
    secrets = PRODUCTION / "secrets"
    examples = sorted(secrets.glob("*.example"))
    assert {p.name for p in examples} == {"tokens.yaml.example", "collector-token.example"}
    for example in examples:
        values = [line.split(":", 1)[-1] for line in example.read_text().splitlines()
                  if line.strip() and not line.startswith("#")]
        assert values and all(v.startswith("REPLACE_ME") for v in values), example
    ignore = (secrets / ".gitignore").read_text().split()
    assert "*" in ignore and "!*.example" in ignore


def test_components_listed_in_readme():
    readme = (DEPLOY / "README.md").read_text()
    for component in COMPONENTS.iterdir():
        assert f"components/{component.name}" in readme, component.name


def test_write_placeholder_secrets_is_what_the_readme_says(tmp_path):
    overlay = tmp_path / "production"
    shutil.copytree(PRODUCTION, overlay)
    write_placeholder_secrets(overlay)
    assert (overlay / "secrets" / "tokens.yaml").is_file()
    assert (overlay / "secrets" / "collector-token").is_file()
    readme = (DEPLOY / "README.md").read_text()
    assert "secrets/tokens.yaml" in readme and "secrets/collector-token" in readme

//! Demo cluster activity for `ward up`: container logs in kubelet's CRI
//! layout and API server audit events, mostly routine, with an intrusion
//! story woven in so that a new user has something to find:
//!
//! 1. `mallory@example.com` from 203.0.113.7 probes secrets and gets a burst of 403s;
//! 2. impersonates a service account, execs into a payments pod;
//! 3. binds herself to `cluster-admin` and starts a privileged pod mounting `/`.
//!
//! The story starts a few seconds after launch and repeats every minute.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use chrono::{SecondsFormat, Utc};
use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::{Value, json};

const TICK: Duration = Duration::from_secs(1);
const STORY_EVERY_TICKS: u64 = 60;
const STORY_FIRST_TICK: u64 = 3;

struct Pod {
    namespace: &'static str,
    name: &'static str,
    uid: &'static str,
    container: &'static str,
    lines: &'static [&'static str],
}

const PODS: &[Pod] = &[
    Pod {
        namespace: "shop",
        name: "frontend-7d9c6b5f4-x2v9k",
        uid: "6f1c2a4e-1b0d-4e57-9a8c-2f6d1e0b7a31",
        container: "nginx",
        lines: &[
            r#"10.244.1.7 - - "GET /cart HTTP/1.1" 200 512 "-" "Mozilla/5.0""#,
            r#"10.244.1.9 - - "GET /products/42 HTTP/1.1" 200 2048 "-" "Mozilla/5.0""#,
            r#"10.244.2.3 - - "POST /checkout HTTP/1.1" 502 157 "-" "Mozilla/5.0""#,
            r#"10.244.1.7 - - "GET /healthz HTTP/1.1" 200 2 "-" "kube-probe/1.30""#,
        ],
    },
    Pod {
        namespace: "shop",
        name: "checkout-5f6b8d7c9-q8wzr",
        uid: "a3d9e0f2-6c41-4b8e-8d27-0e5f9c1b3a62",
        container: "app",
        lines: &[
            r#"level=info msg="order placed" order_id=81723 amount=42.10"#,
            r#"level=error msg="dial tcp 10.96.0.12:5432: connect: connection refused" component=db"#,
            r#"level=warn msg="retrying payment authorization" attempt=2"#,
            r#"level=info msg="payment authorized" order_id=81724"#,
        ],
    },
    Pod {
        namespace: "payments",
        name: "ledger-0",
        uid: "0c7e5b1a-9f3d-4a26-b8e4-7d1a2c6f9e05",
        container: "ledger",
        lines: &[
            r#"{"level":"info","msg":"committed journal entry","entries":3}"#,
            r#"{"level":"info","msg":"reconciliation finished","drift":0}"#,
            r#"{"level":"error","msg":"upstream timeout","upstream":"bank-gateway"}"#,
        ],
    },
    Pod {
        namespace: "kube-system",
        name: "coredns-76f75df574-9kxlp",
        uid: "4b2f7c1e-3a9d-4e60-a5c8-1d0e7f2b6a94",
        container: "coredns",
        lines: &[
            r#"[INFO] 10.244.1.7:53211 - 4211 "A IN checkout.shop.svc.cluster.local. udp 50 false 512" NOERROR qr,aa,rd 98 0.000112s"#,
            r#"[INFO] 10.244.2.3:40121 - 9913 "AAAA IN ledger.payments.svc.cluster.local. udp 51 false 512" NOERROR qr,aa,rd 144 0.000091s"#,
        ],
    },
];

/// Writes demo activity under `dir` until `stop` resolves.
pub async fn run(dir: PathBuf, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let stopped = Arc::new(AtomicBool::new(false));
    let flag = stopped.clone();
    let worker = tokio::task::spawn_blocking(move || generate(&dir, &flag));
    stop.await;
    stopped.store(true, Ordering::SeqCst);
    worker.await.context("demo generator panicked")?
}

fn generate(dir: &Path, stop: &AtomicBool) -> anyhow::Result<()> {
    let audit_dir = dir.join("audit");
    std::fs::create_dir_all(&audit_dir)?;
    let mut audit = append(&audit_dir.join("audit.log"))?;
    let mut pods = Vec::new();
    for pod in PODS {
        let pod_dir = dir
            .join("pods")
            .join(format!("{}_{}_{}", pod.namespace, pod.name, pod.uid))
            .join(pod.container);
        std::fs::create_dir_all(&pod_dir)?;
        pods.push((pod, append(&pod_dir.join("0.log"))?));
    }
    let mut rng = rand::rng();
    let mut tick = 0u64;
    while !stop.load(Ordering::SeqCst) {
        for (pod, file) in &mut pods {
            for _ in 0..rng.random_range(1..4) {
                let line = pod.lines.choose(&mut rng).copied().unwrap_or_default();
                writeln!(file, "{} stdout F {line}", now())?;
            }
            if tick % 17 == 5 {
                // A long line, cut by the runtime into partial chunks.
                let ts = now();
                writeln!(
                    file,
                    "{ts} stderr P panic: runtime error: index out of range [3] with length 3 goroutine 17 [running]: "
                )?;
                writeln!(
                    file,
                    "{ts} stderr F main.(*Cart).Total(...) /src/cart.go:88 +0x1d"
                )?;
            }
        }
        for event in routine(&mut rng) {
            writeln!(audit, "{event}")?;
        }
        if tick % STORY_EVERY_TICKS == STORY_FIRST_TICK {
            for event in story() {
                writeln!(audit, "{event}")?;
            }
        }
        tick += 1;
        std::thread::sleep(TICK);
    }
    Ok(())
}

fn append(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn audit_id(rng: &mut impl Rng) -> String {
    let b: [u8; 16] = rng.random();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0fff,
        (u16::from_be_bytes([b[8], b[9]]) & 0x3fff) | 0x8000,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]])
    )
}

struct Req<'a> {
    user: &'a str,
    groups: &'a [&'a str],
    ip: &'a str,
    agent: &'a str,
    verb: &'a str,
    resource: &'a str,
    subresource: Option<&'a str>,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
    api_group: &'a str,
    code: u16,
    uri: String,
    request_object: Option<Value>,
    impersonate: Option<&'a str>,
}

fn event(req: Req<'_>) -> Value {
    let mut rng = rand::rng();
    let t = now();
    let mut object_ref = json!({"resource": req.resource, "apiVersion": "v1"});
    if !req.api_group.is_empty() {
        object_ref["apiGroup"] = json!(req.api_group);
    }
    if let Some(s) = req.subresource {
        object_ref["subresource"] = json!(s);
    }
    if let Some(ns) = req.namespace {
        object_ref["namespace"] = json!(ns);
    }
    if let Some(n) = req.name {
        object_ref["name"] = json!(n);
    }
    let allowed = req.code < 400;
    let mut e = json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": if req.request_object.is_some() { "RequestResponse" } else { "Metadata" },
        "auditID": audit_id(&mut rng),
        "stage": "ResponseComplete",
        "requestURI": req.uri,
        "verb": req.verb,
        "user": {"username": req.user, "groups": req.groups},
        "sourceIPs": [req.ip],
        "userAgent": req.agent,
        "objectRef": object_ref,
        "responseStatus": {"metadata": {}, "code": req.code},
        "requestReceivedTimestamp": t,
        "stageTimestamp": t,
        "annotations": {
            "authorization.k8s.io/decision": if allowed { "allow" } else { "forbid" },
            "authorization.k8s.io/reason": if allowed { "RBAC: allowed by ClusterRoleBinding" } else { "" },
        },
    });
    if let Some(o) = req.request_object {
        e["requestObject"] = o;
    }
    if let Some(sa) = req.impersonate {
        e["impersonatedUser"] =
            json!({"username": sa, "groups": ["system:serviceaccounts", "system:authenticated"]});
    }
    e
}

fn base<'a>(user: &'a str, groups: &'a [&'a str], ip: &'a str, agent: &'a str) -> Req<'a> {
    Req {
        user,
        groups,
        ip,
        agent,
        verb: "get",
        resource: "pods",
        subresource: None,
        namespace: None,
        name: None,
        api_group: "",
        code: 200,
        uri: String::new(),
        request_object: None,
        impersonate: None,
    }
}

/// What a quiet cluster does every second.
fn routine(rng: &mut impl Rng) -> Vec<Value> {
    const CONTROLLER: &str = "system:kube-controller-manager";
    const KUBELET: &str = "system:node:worker-1";
    let mut out = vec![
        event(Req {
            verb: "watch",
            resource: "secrets",
            uri: "/api/v1/secrets?allowWatchBookmarks=true&watch=true".into(),
            ..base(
                CONTROLLER,
                &["system:authenticated"],
                "10.0.0.10",
                "kube-controller-manager/v1.30.2",
            )
        }),
        event(Req {
            verb: "update",
            resource: "leases",
            api_group: "coordination.k8s.io",
            namespace: Some("kube-node-lease"),
            name: Some("worker-1"),
            uri: "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/worker-1".into(),
            ..base(
                KUBELET,
                &["system:nodes", "system:authenticated"],
                "10.0.0.21",
                "kubelet/v1.30.2",
            )
        }),
    ];
    if rng.random_bool(0.5) {
        out.push(event(Req {
            verb: "create",
            resource: "serviceaccounts",
            subresource: Some("token"),
            namespace: Some("shop"),
            name: Some("checkout"),
            uri: "/api/v1/namespaces/shop/serviceaccounts/checkout/token".into(),
            code: 201,
            ..base(
                KUBELET,
                &["system:nodes", "system:authenticated"],
                "10.0.0.21",
                "kubelet/v1.30.2",
            )
        }));
    }
    if rng.random_bool(0.3) {
        out.push(event(Req {
            verb: "list",
            namespace: Some("shop"),
            uri: "/api/v1/namespaces/shop/pods?limit=500".into(),
            ..base(
                "alice@example.com",
                &["devs", "system:authenticated"],
                "192.168.10.4",
                "kubectl/v1.30.1",
            )
        }));
    }
    if rng.random_bool(0.2) {
        out.push(event(Req {
            verb: "patch",
            resource: "deployments",
            api_group: "apps",
            namespace: Some("shop"),
            name: Some("frontend"),
            uri: "/apis/apps/v1/namespaces/shop/deployments/frontend".into(),
            ..base(
                "system:serviceaccount:ci:deployer",
                &["system:serviceaccounts", "system:authenticated"],
                "10.0.0.40",
                "argocd/v2.11",
            )
        }));
    }
    if rng.random_bool(0.3) {
        out.push(event(Req {
            verb: "get",
            resource: "",
            uri: "/healthz".into(),
            ..base(
                "system:anonymous",
                &["system:unauthenticated"],
                "10.0.0.1",
                "kube-probe/1.30",
            )
        }));
    }
    out
}

/// The intrusion, in order.
fn story() -> Vec<Value> {
    const WHO: &str = "mallory@example.com";
    const GROUPS: &[&str] = &["contractors", "system:authenticated"];
    const IP: &str = "203.0.113.7";
    const AGENT: &str = "kubectl/v1.29.0 (linux/amd64)";
    let mut out = Vec::new();
    // Twelve denials within seconds: enough for the built-in
    // "burst of forbidden requests" correlation (10 in 5 minutes).
    for ns in [
        "payments",
        "kube-system",
        "shop",
        "default",
        "monitoring",
        "payments",
        "staging",
        "ingress-nginx",
        "cert-manager",
        "logging",
        "kube-public",
        "argocd",
    ] {
        out.push(event(Req {
            verb: "list",
            resource: "secrets",
            namespace: Some(ns),
            code: 403,
            uri: format!("/api/v1/namespaces/{ns}/secrets"),
            ..base(WHO, GROUPS, IP, AGENT)
        }));
    }
    out.push(event(Req {
        verb: "get",
        resource: "secrets",
        namespace: Some("payments"),
        name: Some("bank-gateway-credentials"),
        uri: "/api/v1/namespaces/payments/secrets/bank-gateway-credentials".into(),
        impersonate: Some("system:serviceaccount:payments:ledger"),
        ..base(WHO, GROUPS, IP, AGENT)
    }));
    out.push(event(Req {
        verb: "create",
        subresource: Some("exec"),
        namespace: Some("payments"),
        name: Some("ledger-0"),
        code: 101,
        uri: "/api/v1/namespaces/payments/pods/ledger-0/exec?command=sh&container=ledger&stdin=true&stdout=true&tty=true".into(),
        ..base(WHO, GROUPS, IP, AGENT)
    }));
    out.push(event(Req {
        verb: "create",
        resource: "clusterrolebindings",
        api_group: "rbac.authorization.k8s.io",
        name: Some("mallory-admin"),
        code: 201,
        uri: "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings".into(),
        request_object: Some(json!({
            "kind": "ClusterRoleBinding", "apiVersion": "rbac.authorization.k8s.io/v1",
            "metadata": {"name": "mallory-admin"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "User", "name": WHO, "apiGroup": "rbac.authorization.k8s.io"}]
        })),
        ..base(WHO, GROUPS, IP, AGENT)
    }));
    out.push(event(Req {
        verb: "create",
        namespace: Some("kube-system"),
        name: Some("node-debugger"),
        code: 201,
        uri: "/api/v1/namespaces/kube-system/pods".into(),
        request_object: Some(json!({
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": "node-debugger", "namespace": "kube-system"},
            "spec": {
                "hostPID": true, "hostNetwork": true,
                "containers": [{"name": "shell", "image": "alpine:3.19", "command": ["sleep", "infinity"],
                                "securityContext": {"privileged": true},
                                "volumeMounts": [{"name": "host", "mountPath": "/host"}]}],
                "volumes": [{"name": "host", "hostPath": {"path": "/"}}]
            }
        })),
        ..base(WHO, GROUPS, IP, AGENT)
    }));
    out.push(event(Req {
        verb: "delete",
        resource: "events",
        namespace: Some("kube-system"),
        uri: "/api/v1/namespaces/kube-system/events".into(),
        ..base(WHO, GROUPS, IP, AGENT)
    }));
    out.push(event(Req {
        verb: "get",
        resource: "pods",
        namespace: Some("kube-system"),
        uri: "/api/v1/namespaces/kube-system/pods".into(),
        ..base(
            "system:anonymous",
            &["system:unauthenticated"],
            "198.51.100.23",
            "curl/8.5.0",
        )
    }));
    out
}

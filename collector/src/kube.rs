//! Pod metadata from the Kubernetes API (`--kube-metadata`): labels,
//! allow-listed annotations, the controlling owner and the node, for the
//! pods of this node, kept current with a list + watch of
//! `/api/v1/pods?fieldSelector=spec.nodeName=<node>`.
//!
//! Hand-written over reqwest rather than kube-rs: Ward needs one list and
//! one watch of one resource, and kube-rs with k8s-openapi would add a few
//! hundred crates and minutes of build on CI's two cores for it. In a pod,
//! the API server, token and CA come from the service account (the token is
//! read again for every request, since kubelet rotates it).
//!
//! A deleted pod's metadata stays for [`DELETED_GRACE`]: its last lines are
//! often read after the pod is gone. A failed list or watch is retried with
//! backoff; records read meanwhile carry what their paths tell.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use ward_event::path::PodRef;

use crate::Error;

/// How long a deleted pod's metadata is kept.
pub const DELETED_GRACE: Duration = Duration::from_secs(300);
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// A watch is renewed after this long even if the server keeps it open.
const WATCH_TIMEOUT_SECS: u64 = 290;
/// A single watch event larger than this is refused (a pod object is a few kB).
const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// Where the API server is and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct KubeApi {
    pub server: String,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
}

impl KubeApi {
    /// The in-cluster API server of the pod's service account.
    pub fn in_cluster() -> Result<KubeApi, Error> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
            Error::Config(
                "--kube-metadata outside a pod needs --kube-api-server (KUBERNETES_SERVICE_HOST is not set)"
                    .into(),
            )
        })?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        Ok(KubeApi {
            server: format!("https://{host}:{port}"),
            token_file: Some(PathBuf::from(SA_DIR).join("token")),
            ca_file: Some(PathBuf::from(SA_DIR).join("ca.crt")),
        })
    }
}

/// What the API adds to a record's `kubernetes` object.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PodMeta {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Owner {
    pub kind: String,
    pub name: String,
}

struct Entry {
    meta: Arc<PodMeta>,
    key: (String, String),
    deleted: Option<Instant>,
}

/// Pods of this node by uid, and by namespace and name (the
/// `/var/log/containers` layout has no uid).
#[derive(Default)]
pub struct PodCache {
    by_uid: HashMap<String, Entry>,
    by_name: HashMap<(String, String), String>,
}

pub type SharedPods = Arc<RwLock<PodCache>>;

impl PodCache {
    pub fn lookup(&self, pod: &PodRef) -> Option<Arc<PodMeta>> {
        let uid = match &pod.pod_uid {
            Some(uid) => uid,
            None => self
                .by_name
                .get(&(pod.namespace.clone(), pod.pod.clone()))?,
        };
        self.by_uid.get(uid).map(|e| e.meta.clone())
    }

    fn upsert(&mut self, pod: Pod, allow: &[String]) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let key = (
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
        );
        let meta = Arc::new(pod.into_meta(allow));
        self.by_name.insert(key.clone(), uid.clone());
        self.by_uid.insert(
            uid,
            Entry {
                meta,
                key,
                deleted: None,
            },
        );
    }

    fn delete(&mut self, uid: &str) {
        if let Some(e) = self.by_uid.get_mut(uid) {
            e.deleted.get_or_insert_with(Instant::now);
        }
    }

    /// After a fresh list: pods not in it were deleted while unwatched.
    fn mark_missing(&mut self, present: &[String]) {
        let now = Instant::now();
        for (uid, e) in &mut self.by_uid {
            if !present.contains(uid) {
                e.deleted.get_or_insert(now);
            }
        }
    }

    fn prune(&mut self, grace: Duration) {
        let gone: Vec<String> = self
            .by_uid
            .iter()
            .filter(|(_, e)| e.deleted.is_some_and(|t| t.elapsed() >= grace))
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in gone {
            if let Some(e) = self.by_uid.remove(&uid)
                && self.by_name.get(&e.key) == Some(&uid)
            {
                self.by_name.remove(&e.key);
            }
        }
    }
}

#[derive(Deserialize)]
struct PodList {
    #[serde(default)]
    metadata: ListMeta,
    #[serde(default)]
    items: Vec<Pod>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ListMeta {
    resource_version: Option<String>,
}

#[derive(Deserialize)]
struct Pod {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<PodSpec>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ObjectMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    owner_references: Vec<OwnerReference>,
}

#[derive(Deserialize)]
struct OwnerReference {
    kind: String,
    name: String,
    #[serde(default)]
    controller: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    node_name: Option<String>,
}

impl Pod {
    fn into_meta(self, allow: &[String]) -> PodMeta {
        let m = self.metadata;
        let owner = m
            .owner_references
            .iter()
            .find(|o| o.controller)
            .or(m.owner_references.first())
            .map(|o| Owner {
                kind: o.kind.clone(),
                name: o.name.clone(),
            });
        PodMeta {
            labels: m.labels,
            annotations: m
                .annotations
                .into_iter()
                .filter(|(k, _)| allow.iter().any(|a| a == k))
                .collect(),
            owner,
            node_name: self.spec.and_then(|s| s.node_name),
        }
    }
}

#[derive(Deserialize)]
struct WatchEvent {
    #[serde(rename = "type")]
    kind: String,
    object: serde_json::Value,
}

/// Keeps `pods` current until `stop` says so.
pub async fn run(
    api: KubeApi,
    node: String,
    allow: Vec<String>,
    pods: SharedPods,
    mut stop: watch::Receiver<bool>,
) {
    let client = match client(&api) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "kubernetes metadata disabled");
            return;
        }
    };
    let mut backoff = Duration::from_secs(1);
    while !*stop.borrow() {
        let session = list_and_watch(&client, &api, &node, &allow, &pods);
        let result = tokio::select! {
            r = session => r,
            _ = stop.changed() => return,
        };
        match result {
            Ok(()) => backoff = Duration::from_secs(1),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "kubernetes pod list or watch failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

fn client(api: &KubeApi) -> Result<reqwest::Client, Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
    if let Some(ca) = &api.ca_file {
        let pem = std::fs::read(ca).map_err(crate::error::io(ca))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| Error::Config(format!("kubernetes CA {}: {e}", ca.display())))?;
        builder = builder.tls_certs_only(certs);
    }
    builder.build().map_err(|e| Error::Http(e.to_string()))
}

fn request(client: &reqwest::Client, api: &KubeApi, query: &str) -> reqwest::RequestBuilder {
    let url = format!("{}/api/v1/pods?{query}", api.server.trim_end_matches('/'));
    let mut req = client.get(url);
    // Read for every request: kubelet rotates projected tokens.
    if let Some(path) = &api.token_file
        && let Ok(token) = std::fs::read_to_string(path)
        && let Ok(mut value) =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
    {
        value.set_sensitive(true);
        req = req.header(reqwest::header::AUTHORIZATION, value);
    }
    req
}

/// One list, then watches from its resource version until the server says
/// the version is too old (410) or something fails.
async fn list_and_watch(
    client: &reqwest::Client,
    api: &KubeApi,
    node: &str,
    allow: &[String],
    pods: &SharedPods,
) -> Result<(), String> {
    let selector = format!("fieldSelector=spec.nodeName%3D{}", urlencode(node));
    let resp = request(client, api, &selector)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("list answered {}", resp.status()));
    }
    let list: PodList = resp.json().await.map_err(|e| e.to_string())?;
    let mut version = list.metadata.resource_version.unwrap_or_default();
    {
        let mut cache = pods.write().map_err(|_| "pod cache poisoned")?;
        let uids: Vec<String> = list
            .items
            .iter()
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        cache.mark_missing(&uids);
        for pod in list.items {
            cache.upsert(pod, allow);
        }
        cache.prune(DELETED_GRACE);
        tracing::info!(pods = uids.len(), "listed this node's pods");
    }
    loop {
        let query = format!(
            "{selector}&watch=1&allowWatchBookmarks=true&timeoutSeconds={WATCH_TIMEOUT_SECS}&resourceVersion={}",
            urlencode(&version)
        );
        let mut resp = request(client, api, &query)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("watch answered {}", resp.status()));
        }
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            buf.extend_from_slice(&chunk);
            while let Some(end) = memchr::memchr(b'\n', &buf) {
                let line: Vec<u8> = buf.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match apply(&line, allow, pods)? {
                    Some(v) => version = v,
                    None => return Ok(()), // 410 Gone: list again
                }
            }
            if buf.len() > MAX_EVENT_BYTES {
                return Err("watch event over the size bound".into());
            }
        }
    }
}

/// Applies one watch event; returns the new resource version, or None when
/// the watch must start over from a list.
fn apply(line: &[u8], allow: &[String], pods: &SharedPods) -> Result<Option<String>, String> {
    let event: WatchEvent = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    if event.kind == "ERROR" {
        let code = event.object["code"].as_u64().unwrap_or(0);
        if code == 410 {
            tracing::debug!("watch resource version too old; listing again");
            return Ok(None);
        }
        return Err(format!("watch error {code}: {}", event.object["message"]));
    }
    let pod: Pod = serde_json::from_value(event.object).map_err(|e| e.to_string())?;
    let version = pod.metadata.resource_version.clone().unwrap_or_default();
    let mut cache = pods.write().map_err(|_| "pod cache poisoned")?;
    match event.kind.as_str() {
        "ADDED" | "MODIFIED" => cache.upsert(pod, allow),
        "DELETED" => {
            if let Some(uid) = &pod.metadata.uid {
                cache.delete(uid);
            }
        }
        _ => {} // BOOKMARK: only the version moves on
    }
    cache.prune(DELETED_GRACE);
    Ok(Some(version))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_events_update_and_deleted_pods_linger() {
        let pods: SharedPods = Arc::default();
        let allow = vec!["team".to_string()];
        let added = br#"{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"web-0","namespace":"prod","uid":"u1","resourceVersion":"7","labels":{"app":"web"},"annotations":{"team":"a","kubectl.kubernetes.io/last-applied-configuration":"{}"},"ownerReferences":[{"kind":"StatefulSet","name":"web","controller":true}]},"spec":{"nodeName":"n1"}}}"#;
        assert_eq!(apply(added, &allow, &pods).unwrap().as_deref(), Some("7"));
        let by_uid = PodRef {
            namespace: "prod".into(),
            pod: "web-0".into(),
            pod_uid: Some("u1".into()),
            ..PodRef::default()
        };
        let by_name = PodRef {
            pod_uid: None,
            ..by_uid.clone()
        };
        let meta = pods.read().unwrap().lookup(&by_uid).unwrap();
        assert_eq!(meta.labels["app"], "web");
        assert_eq!(meta.annotations.len(), 1, "only allow-listed annotations");
        assert_eq!(meta.owner.as_ref().unwrap().kind, "StatefulSet");
        assert_eq!(meta.node_name.as_deref(), Some("n1"));
        assert!(pods.read().unwrap().lookup(&by_name).is_some());
        let deleted =
            br#"{"type":"DELETED","object":{"metadata":{"uid":"u1","resourceVersion":"9"}}}"#;
        assert_eq!(apply(deleted, &allow, &pods).unwrap().as_deref(), Some("9"));
        assert!(
            pods.read().unwrap().lookup(&by_uid).is_some(),
            "kept for a grace period"
        );
        pods.write().unwrap().prune(Duration::ZERO);
        assert!(pods.read().unwrap().lookup(&by_uid).is_none());
        let gone = br#"{"type":"ERROR","object":{"kind":"Status","code":410,"message":"too old"}}"#;
        assert_eq!(apply(gone, &allow, &pods).unwrap(), None);
    }
}

//! Pod metadata from the paths kubelet writes container logs to:
//! `/var/log/containers/<pod>_<namespace>_<container>-<container id>.log`
//! (symlinks) and `/var/log/pods/<namespace>_<pod>_<pod uid>/<container>/<restart count>.log`
//! (with rotated siblings `<n>.log.<timestamp>` and `<n>.log.<timestamp>.gz`).
//!
//! Pod, namespace and container names are DNS labels and cannot hold `_`,
//! which is what makes these paths unambiguous.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// What a log path says about the container that wrote it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub pod: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    pub container: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_count: Option<u32>,
}

/// Reads pod metadata from either kubelet path layout.
pub fn pod_ref(path: &Path) -> Option<PodRef> {
    let file = path.file_name()?.to_str()?;
    let parent = path.parent()?;
    if let Some(stem) = file.strip_suffix(".log")
        && let Some(pod_ref) = from_containers_name(stem)
    {
        return Some(pod_ref);
    }
    // /var/log/pods/<ns>_<pod>_<uid>/<container>/<n>.log[.<ts>[.gz]]
    let container = parent.file_name()?.to_str()?;
    let pod_dir = parent.parent()?.file_name()?.to_str()?;
    let mut parts = pod_dir.splitn(3, '_');
    let (namespace, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    let restart = file.split('.').next()?.parse::<u32>().ok()?;
    if namespace.is_empty() || pod.is_empty() || container.is_empty() {
        return None;
    }
    Some(PodRef {
        namespace: namespace.to_owned(),
        pod: pod.to_owned(),
        pod_uid: Some(uid.to_owned()).filter(|u| !u.is_empty()),
        container: container.to_owned(),
        container_id: None,
        restart_count: Some(restart),
    })
}

fn from_containers_name(stem: &str) -> Option<PodRef> {
    let (rest, id) = stem.rsplit_once('-')?;
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut parts = rest.splitn(3, '_');
    let (pod, namespace, container) = (parts.next()?, parts.next()?, parts.next()?);
    if pod.is_empty() || namespace.is_empty() || container.is_empty() || container.contains('_') {
        return None;
    }
    Some(PodRef {
        namespace: namespace.to_owned(),
        pod: pod.to_owned(),
        pod_uid: None,
        container: container.to_owned(),
        container_id: Some(id.to_owned()),
        restart_count: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "8f3f4b2a1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f";

    #[test]
    fn containers_layout() {
        let p = format!("/var/log/containers/web-7d9f-abcde_prod_nginx-{ID}.log");
        let r = pod_ref(Path::new(&p)).unwrap();
        assert_eq!(
            (r.pod.as_str(), r.namespace.as_str(), r.container.as_str()),
            ("web-7d9f-abcde", "prod", "nginx")
        );
        assert_eq!(r.container_id.as_deref(), Some(ID));
    }

    #[test]
    fn pods_layout_with_rotation_suffixes() {
        for f in ["3.log", "3.log.20240501-101010", "3.log.20240501-101010.gz"] {
            let p =
                format!("/var/log/pods/prod_web-0_0b1c2d3e-aaaa-bbbb-cccc-123456789012/nginx/{f}");
            let r = pod_ref(Path::new(&p)).unwrap();
            assert_eq!(r.namespace, "prod");
            assert_eq!(r.pod, "web-0");
            assert_eq!(
                r.pod_uid.as_deref(),
                Some("0b1c2d3e-aaaa-bbbb-cccc-123456789012")
            );
            assert_eq!(r.container, "nginx");
            assert_eq!(r.restart_count, Some(3));
        }
    }

    #[test]
    fn unknown_layouts() {
        assert!(pod_ref(Path::new("/var/log/syslog")).is_none());
        assert!(pod_ref(Path::new("/var/log/containers/x.log")).is_none());
    }
}

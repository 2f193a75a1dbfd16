//! `--kube-metadata`: the collector lists and watches this node's pods and
//! adds labels, allow-listed annotations, owner and node to container
//! records. The API server is a small local HTTP server that answers the
//! pods list and watch with recorded responses.

// Test helpers outside #[test] functions may unwrap too: a panic is a test failure.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ward_e2e::{Rig, append, cri_lines, wait_until};

const WAIT: Duration = Duration::from_secs(60);

const POD_LIST: &str = r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"1000"},"items":[
{"metadata":{"name":"web-0","namespace":"shop","uid":"0b1c2d3e-0000-4000-8000-000000000001","resourceVersion":"990","labels":{"app":"web","tier":"frontend"},"annotations":{"team":"payments","kubectl.kubernetes.io/last-applied-configuration":"{\"big\":\"blob\"}"},"ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-7d9f","uid":"r1","controller":true}]},"spec":{"nodeName":"e2e-node-1","containers":[{"name":"app","image":"web:1"}]},"status":{"phase":"Running"}},
{"metadata":{"name":"worker-1","namespace":"shop","uid":"0b1c2d3e-0000-4000-8000-000000000002","resourceVersion":"995","labels":{"app":"worker"},"ownerReferences":[{"apiVersion":"batch/v1","kind":"Job","name":"nightly","uid":"j1","controller":true}]},"spec":{"nodeName":"e2e-node-1"},"status":{"phase":"Running"}}]}"#;

const MODIFIED: &str = r#"{"type":"MODIFIED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"web-0","namespace":"shop","uid":"0b1c2d3e-0000-4000-8000-000000000001","resourceVersion":"1001","labels":{"app":"web-v2"},"annotations":{"team":"payments"},"ownerReferences":[{"kind":"ReplicaSet","name":"web-8e0a","controller":true}]},"spec":{"nodeName":"e2e-node-1"}}}"#;
const DELETED: &str = r#"{"type":"DELETED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"worker-1","namespace":"shop","uid":"0b1c2d3e-0000-4000-8000-000000000002","resourceVersion":"1002","labels":{"app":"worker"}},"spec":{"nodeName":"e2e-node-1"}}}"#;

/// The recorded API server: the list, then a watch that streams whatever
/// the test queues, one JSON event per line, chunked like the real one.
struct FakeApi {
    port: u16,
    watches: Arc<AtomicUsize>,
    events: Arc<Mutex<Vec<String>>>,
    requests: Arc<Mutex<Vec<String>>>,
    done: Arc<AtomicBool>,
}

impl FakeApi {
    fn start() -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let api = FakeApi {
            port,
            watches: Arc::default(),
            events: Arc::default(),
            requests: Arc::default(),
            done: Arc::default(),
        };
        let (watches, events, requests, done) = (
            api.watches.clone(),
            api.events.clone(),
            api.requests.clone(),
            api.done.clone(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (watches, events, requests, done) = (
                    watches.clone(),
                    events.clone(),
                    requests.clone(),
                    done.clone(),
                );
                std::thread::spawn(move || serve(conn, &watches, &events, &requests, &done));
            }
        });
        api
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

fn serve(
    conn: TcpStream,
    watches: &AtomicUsize,
    events: &Mutex<Vec<String>>,
    requests: &Mutex<Vec<String>>,
    done: &AtomicBool,
) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).map_or(true, |n| n == 0) || header == "\r\n" {
            break;
        }
    }
    let path = first.split(' ').nth(1).unwrap_or_default().to_owned();
    requests.lock().expect("lock").push(path.clone());
    let mut conn = conn;
    if !path.starts_with("/api/v1/pods?fieldSelector=spec.nodeName%3De2e-node-1") {
        let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
        return;
    }
    if !path.contains("watch=1") {
        let _ = write!(
            conn,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{POD_LIST}",
            POD_LIST.len()
        );
        return;
    }
    watches.fetch_add(1, Ordering::SeqCst);
    let _ = conn.write_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
    );
    // Every watch replays the queued events from the start, as a server
    // would from the list's resource version.
    let mut sent = 0;
    while !done.load(Ordering::SeqCst) {
        let queued: Vec<String> = events.lock().expect("lock")[sent..].to_vec();
        for e in queued {
            let line = format!("{e}\n");
            if write!(conn, "{:x}\r\n{line}\r\n", line.len()).is_err() {
                return;
            }
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = conn.write_all(b"0\r\n\r\n");
    let mut rest = Vec::new();
    let _ = conn.read_to_end(&mut rest);
}

#[test]
fn records_get_labels_annotations_and_owners_from_the_api() {
    let api = FakeApi::start();
    let mut rig = Rig::new();
    rig.start_indexer();
    let server = format!("http://127.0.0.1:{}", api.port);
    rig.start_collector(&[
        "--kube-metadata",
        "--kube-api-server",
        &server,
        "--kube-annotation",
        "team",
    ]);
    wait_until("the collector to list and watch", WAIT, || {
        (api.watches.load(Ordering::SeqCst) > 0).then_some(())
    });
    let web = rig
        .root
        .join("pods/shop_web-0_0b1c2d3e-0000-4000-8000-000000000001/app/0.log");
    append(&web, cri_lines("web", 0..5).as_bytes());
    let hits = rig.client.wait_for_total("kubernetes.pod:web\\-0", 5, WAIT);
    let k = &hits["hits"][0]["kubernetes"];
    assert_eq!(k["namespace"], "shop", "path metadata kept");
    assert_eq!(k["labels"]["app"], "web");
    assert_eq!(k["labels"]["tier"], "frontend");
    assert_eq!(
        k["annotations"],
        serde_json::json!({"team": "payments"}),
        "allow-list only"
    );
    assert_eq!(
        k["owner"],
        serde_json::json!({"kind": "ReplicaSet", "name": "web-7d9f"})
    );
    assert_eq!(k["node_name"], "e2e-node-1");
    assert!(
        api.requests
            .lock()
            .unwrap()
            .iter()
            .any(|p| p.contains("watch=1") && p.contains("resourceVersion=1000")),
        "the watch starts at the list's resource version"
    );

    // A watch update reaches records read after it.
    api.events.lock().unwrap().push(MODIFIED.into());
    let mut i = 5;
    wait_until("the updated labels", WAIT, || {
        append(&web, cri_lines("web", i..i + 1).as_bytes());
        i += 1;
        std::thread::sleep(Duration::from_millis(200));
        (rig.client.search("kubernetes.labels.app:web\\-v2", 1)["total"] != 0).then_some(())
    });
    let latest = rig.client.search("kubernetes.labels.app:web\\-v2", 1);
    assert_eq!(latest["hits"][0]["kubernetes"]["owner"]["name"], "web-8e0a");

    // A deleted pod's last lines still get its metadata (grace period).
    // Events apply in order: once web-0's next change shows, the deletion
    // before it was applied too.
    api.events.lock().unwrap().push(DELETED.into());
    api.events
        .lock()
        .unwrap()
        .push(MODIFIED.replace("web-v2", "web-v3").replace("1001", "1003"));
    wait_until("the change after the deletion", WAIT, || {
        append(&web, cri_lines("web", i..i + 1).as_bytes());
        i += 1;
        std::thread::sleep(Duration::from_millis(200));
        (rig.client.search("kubernetes.labels.app:web\\-v3", 1)["total"] != 0).then_some(())
    });
    let worker = rig
        .root
        .join("pods/shop_worker-1_0b1c2d3e-0000-4000-8000-000000000002/job/0.log");
    append(&worker, cri_lines("last words", 0..3).as_bytes());
    let hits = rig
        .client
        .wait_for_total("kubernetes.pod:worker\\-1", 3, WAIT);
    for hit in hits["hits"].as_array().unwrap() {
        assert_eq!(hit["kubernetes"]["labels"]["app"], "worker");
        assert_eq!(hit["kubernetes"]["owner"]["kind"], "Job");
    }
}

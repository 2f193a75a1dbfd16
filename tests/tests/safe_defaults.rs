//! Safe defaults and honest start-up (issue 15): an indexer without
//! tokens says it is open and refuses to be so on an address other hosts
//! can reach; `ward up` on a busy port fails at once.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ward_e2e::{Client, Process, free_port, start_indexer};

/// Long enough for any start-up; the process is expected to exit at once.
const EXIT_GUARD: Duration = Duration::from_secs(60);

#[test]
fn an_indexer_without_tokens_refuses_a_public_address() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let args: Vec<String> = [
        "indexer",
        "--data",
        &dir.path().join("data").display().to_string(),
        "--listen",
        &format!("0.0.0.0:{port}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut indexer = Process::start("indexer", dir.path(), &args);
    let status = indexer.wait_exit(EXIT_GUARD).expect("the indexer exits");
    assert!(!status.success(), "{}", indexer.output());
    let out = indexer.output();
    assert!(out.contains("--insecure-no-auth"), "{out}");

    // Accepted when asked to, and then it says it is open.
    let mut args = args;
    args.push("--insecure-no-auth".into());
    let mut open = Process::start("open-indexer", dir.path(), &args);
    Client::new(format!("http://127.0.0.1:{port}")).wait_healthy(Duration::from_secs(30));
    open.stop();
    assert_eq!(
        open.output().matches("every endpoint").count(),
        1,
        "{}",
        open.output()
    );
}

#[test]
fn an_indexer_without_tokens_warns_once_and_whoami_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut indexer = start_indexer("indexer", dir.path(), port, &[]);
    let client = Client::new(format!("http://127.0.0.1:{port}"));
    client.wait_healthy(Duration::from_secs(30));
    for _ in 0..3 {
        let me: serde_json::Value = client
            .http()
            .get(format!("http://127.0.0.1:{port}/api/v1/whoami"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(me["auth"], false);
        assert!(me["warning"].as_str().unwrap().contains("open"), "{me}");
    }
    indexer.stop();
    let out = indexer.output();
    assert_eq!(out.matches("no --tokens").count(), 1, "{out}");
}

/// Issue 15: `ward up` on a port in use printed that it was running, hung,
/// and its collector shipped the demo into the other instance.
#[test]
fn ward_up_on_a_busy_port_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let args: Vec<String> = [
        "up",
        "--data",
        &dir.path().join("data").display().to_string(),
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--no-demo",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut up = Process::start("up", dir.path(), &args);
    let status = up.wait_exit(EXIT_GUARD).expect("ward up exits");
    assert!(!status.success());
    let out = up.output();
    assert!(out.contains("already in use"), "{out}");
    assert!(!out.contains("Ward is running"), "{out}");
    drop(busy);
}

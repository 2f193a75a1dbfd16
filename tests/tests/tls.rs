//! TLS between collector and indexer: the indexer serves TLS and requires
//! client certificates from its CA (`--client-ca`) and ingest tokens
//! (`--tokens`); the collector trusts only `--ca-file`, presents
//! `--client-cert`/`--client-key` and sends `--token-file`. Certificates
//! are made at test time with openssl; no key is kept in the repository.

// Test helpers outside #[test] functions may unwrap too: a panic is a test failure.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ward_e2e::{
    Client, Process, TestPki, append, cri_lines, free_port, scrape, start_indexer, wait_until,
};

const WAIT: Duration = Duration::from_secs(60);
const COLLECTOR_TOKEN: &str = "collector-token-0123456789abcdef";
const VIEWER_TOKEN: &str = "viewer-token-0123456789abcdef";

#[test]
fn mutual_tls_and_tokens_between_collector_and_indexer() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(&dir.path().join("pki"));
    let tokens = dir.path().join("tokens.yaml");
    // With tokens, search needs a token of a role that may search.
    ward_e2e::write_secret(
        &tokens,
        &format!("collector:{COLLECTOR_TOKEN}\nviewer:{VIEWER_TOKEN}\n"),
    );
    let port = free_port();
    let p = |path: &std::path::Path| path.display().to_string();
    let _indexer = start_indexer(
        "indexer",
        dir.path(),
        port,
        &[
            "--tls-cert".into(),
            p(&pki.server_cert),
            "--tls-key".into(),
            p(&pki.server_key),
            "--client-ca".into(),
            p(&pki.ca),
            "--tokens".into(),
            p(&tokens),
        ],
    );
    let base = format!("https://127.0.0.1:{port}");
    let client = Client::with_http(&base, pki.client(Some((&pki.client_cert, &pki.client_key))))
        .with_token(VIEWER_TOKEN);
    client.wait_healthy(WAIT);

    // Without a client certificate, or with one from another CA: no TLS session.
    for identity in [None, Some((&pki.rogue_client_cert, &pki.rogue_client_key))] {
        let http = pki.client(identity.map(|(c, k)| (c.as_path(), k.as_path())));
        let result = http.get(format!("{base}/healthz")).send();
        assert!(result.is_err(), "handshake must fail: {result:?}");
    }
    // Plain HTTP on the TLS port gets nowhere either.
    assert!(
        reqwest::blocking::Client::new()
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .timeout(Duration::from_secs(5))
            .send()
            .map(|r| !r.status().is_success())
            .unwrap_or(true)
    );

    let root = dir.path().join("logs");
    append(
        &root.join("pods/prod_tls-0_uid/app/0.log"),
        cri_lines("over tls", 0..100).as_bytes(),
    );
    let token_file = dir.path().join("collector-token");
    std::fs::write(&token_file, format!("{COLLECTOR_TOKEN}\n")).unwrap();
    let metrics_port = free_port();
    let collector_args = |state: &str, token_file: &std::path::Path, glob: &str| -> Vec<String> {
        [
            "collector",
            "--indexer",
            &base,
            "--state",
            &p(&dir.path().join(state)),
            "--containers",
            &p(&root.join(glob)),
            "--ca-file",
            &p(&pki.ca),
            "--client-cert",
            &p(&pki.client_cert),
            "--client-key",
            &p(&pki.client_key),
            "--token-file",
            &p(token_file),
            "--batch-max-age",
            "100ms",
            "--metrics-listen",
            &format!("127.0.0.1:{metrics_port}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let mut collector = Process::start(
        "collector",
        dir.path(),
        &collector_args("state", &token_file, "pods/*tls-0*/*/*.log"),
    );
    client.wait_for_total("kubernetes.pod:tls\\-0", 100, WAIT);
    collector.stop();

    // A wrong token: 401, and the batches wait in the spool (credentials get
    // fixed), not in the dead-letter folder.
    append(
        &root.join("pods/prod_tls-1_uid/app/0.log"),
        cri_lines("wrong token", 0..10).as_bytes(),
    );
    let wrong = dir.path().join("wrong-token");
    std::fs::write(&wrong, "collector-token-but-not-the-right-one\n").unwrap();
    let _collector = Process::start(
        "collector-wrong-token",
        dir.path(),
        &collector_args("state-wrong", &wrong, "pods/*tls-1*/*/*.log"),
    );
    let metrics_url = format!("http://127.0.0.1:{metrics_port}/metrics");
    wait_until("the refused batch spooled", WAIT, || {
        let m = scrape(&metrics_url)?;
        (m.get("ward_collector_spool_bytes").copied()? > 0.0
            && m.get("ward_collector_batch_retries_total").copied()? > 0.0)
            .then_some(())
    });
    assert_eq!(client.search("kubernetes.pod:tls\\-1", 10)["total"], 0);
    assert!(!dir.path().join("state-wrong/dead-letter").exists());
}

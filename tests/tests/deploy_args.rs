//! The Kubernetes manifests run `ward` with flags this `ward` has: every
//! `--flag` in a container's `args` under `deploy/` appears in the help of
//! the subcommand it is passed to. (A manifest naming a flag the binary
//! lacks fails only at rollout, in a crash loop.)

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use ward_e2e::ward_bin;

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// (subcommand, flags) of every `args:` list whose first item is a subcommand.
fn arg_lists(text: &str) -> Vec<(String, Vec<String>)> {
    let mut lists = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let indent = line.len() - line.trim_start().len();
        if line.trim() != "args:" {
            continue;
        }
        let mut items = Vec::new();
        while let Some(next) = lines.peek() {
            let trimmed = next.trim_start();
            let next_indent = next.len() - trimmed.len();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                lines.next();
                continue;
            }
            if next_indent < indent || (next_indent == indent && !trimmed.starts_with("- ")) {
                break;
            }
            if let Some(item) = trimmed.strip_prefix("- ") {
                items.push(item.trim().trim_matches('"').to_string());
            }
            lines.next();
        }
        if let Some((first, rest)) = items.split_first()
            && !first.starts_with('-')
        {
            let flags = rest
                .iter()
                .filter_map(|a| a.strip_prefix("--"))
                .map(|a| a.split('=').next().unwrap().to_string())
                .collect();
            lists.push((first.clone(), flags));
        }
    }
    lists
}

#[test]
fn every_flag_in_the_manifests_exists() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let mut files = Vec::new();
    yaml_files(&deploy, &mut files);
    let mut by_command: BTreeMap<String, Vec<(String, PathBuf)>> = BTreeMap::new();
    for file in &files {
        for (command, flags) in arg_lists(&std::fs::read_to_string(file).unwrap()) {
            for flag in flags {
                by_command
                    .entry(command.clone())
                    .or_default()
                    .push((flag, file.clone()));
            }
        }
    }
    assert!(
        by_command.get("indexer").is_some_and(|f| f.len() >= 5)
            && by_command.get("collector").is_some_and(|f| f.len() >= 5),
        "the manifests' args were not found: {by_command:?}"
    );
    for (command, flags) in by_command {
        let out = Command::new(ward_bin())
            .args([command.as_str(), "--help"])
            .output()
            .unwrap();
        assert!(out.status.success(), "ward {command} --help failed");
        let help = String::from_utf8_lossy(&out.stdout);
        for (flag, file) in flags {
            assert!(
                help.contains(&format!("--{flag}")),
                "{}: `ward {command}` has no --{flag}",
                file.display()
            );
        }
    }
}

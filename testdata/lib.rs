//! The public test data vendored in this folder (origins and licences in
//! `ORIGIN.md`), found from the workspace's tests, benches and examples.

use std::path::PathBuf;

/// The test data folder, `testdata/` at the repository's root.
///
/// # Panics
///
/// If the folder is missing (a partial checkout): a test without its data
/// fails loudly rather than passing by skipping.
pub fn fixtures() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    assert!(
        dir.join("ORIGIN.md").is_file(),
        "test data missing at {}",
        dir.display()
    );
    dir
}

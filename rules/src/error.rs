//! The crate's one error type, and the load error that pairs it with the
//! rule file it came from.
//!
//! A bad rule must never stop the others: loading collects a [`LoadError`]
//! per broken document and keeps going, so every variant here carries enough
//! context (file, document, field) for an operator to fix the rule without a
//! debugger.

use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

use crate::rule::RuleSource;

/// Everything that can go wrong in this crate.
#[derive(Debug, Error)]
pub enum Error {
    /// A rule file or test file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid YAML.
    #[error("invalid YAML: {0}")]
    Yaml(String),
    /// The document is YAML but not a Sigma rule, correlation or filter we
    /// understand (missing or mistyped attribute).
    #[error("invalid rule: {0}")]
    Rule(String),
    /// A field modifier we do not implement (for instance `expand`, whose
    /// placeholders need site configuration Ward does not have).
    #[error("unsupported modifier {modifier:?} on field {field:?}")]
    Modifier { field: String, modifier: String },
    /// A value that does not fit its modifier (non-numeric `gt`, bad CIDR…).
    #[error("invalid value for {field:?}: {reason}")]
    Value { field: String, reason: String },
    /// A `re` value that does not compile.
    #[error("invalid regular expression for {field:?}: {reason}")]
    Regex { field: String, reason: String },
    /// The detection condition does not parse or names an unknown selection.
    #[error("invalid condition {condition:?}: {reason}")]
    Condition { condition: String, reason: String },
    /// A correlation or filter refers to a rule that is not loaded.
    #[error("unknown rule reference {0:?}")]
    UnknownReference(String),
    /// Correlations that refer to each other in a loop.
    #[error("correlation cycle through {0:?}")]
    Cycle(String),
    /// Writing test output failed.
    #[error("cannot write output: {0}")]
    Output(#[source] std::io::Error),
}

/// A rule document that failed to load: where it is and why. The rule is
/// skipped; every other rule keeps running.
#[derive(Debug)]
pub struct LoadError {
    /// The file (or built-in / inline name) holding the document.
    pub source: RuleSource,
    /// 1-based index of the YAML document in a multi-document file, when the
    /// error is about one document rather than the whole file.
    pub document: Option<usize>,
    /// Title or id of the rule, when it could be read.
    pub rule: Option<String>,
    pub error: Error,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        if let Some(doc) = self.document {
            write!(f, " (document {doc})")?;
        }
        if let Some(rule) = &self.rule {
            write!(f, " rule {rule:?}")?;
        }
        write!(f, ": {}", self.error)
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

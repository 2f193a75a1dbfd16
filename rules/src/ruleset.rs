//! Loading: files and directories → YAML documents → compiled, linked
//! [`RuleSet`].
//!
//! Loading never fails as a whole. Each document that cannot be used
//! becomes a [`LoadError`] naming its file, and everything else is kept;
//! that is what lets a caller reload rules when files change without one
//! typo silencing the whole pack.
//!
//! Linking happens after every document is parsed, so correlations and
//! filters may refer to rules in other files. A reference (`id` or `name`)
//! is looked up in the same file first: the spec makes `name` unique per
//! correlation, and two correlation files may each carry their own copy of
//! a base rule.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::TimeDelta;
use serde::Deserialize;
use serde_json::Value;

use crate::detection::Detection;
use crate::error::{Error, LoadError};
use crate::prefilter::Prefilter;
use crate::rule::{self, CorrKind, CountCond, Doc, RuleInfo, RuleSource};

/// A compiled detection rule.
#[derive(Debug, Clone)]
pub(crate) struct DetRule {
    pub(crate) info: usize,
    pub(crate) detection: Detection,
    /// Sigma filters: each must also hold for the rule to match.
    pub(crate) filters: Vec<Detection>,
    /// False when the rule only feeds correlations (`generate: false`).
    pub(crate) emit: bool,
    /// Whether any correlation consumes this rule's matches.
    pub(crate) feeds: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Input {
    Det(usize),
    Corr(usize),
}

/// A compiled correlation rule.
#[derive(Debug, Clone)]
pub(crate) struct CorrRule {
    pub(crate) info: usize,
    pub(crate) kind: CorrKind,
    pub(crate) inputs: Vec<Input>,
    /// Group-by name, and the field to read for each input (aliases).
    pub(crate) group_by: Vec<(String, Vec<String>)>,
    pub(crate) timespan: TimeDelta,
    pub(crate) condition: Option<CountCond>,
    pub(crate) field: Option<String>,
    pub(crate) emit: bool,
}

/// A filter as loaded, for listing.
#[derive(Debug, Clone)]
pub struct FilterInfo {
    pub title: String,
    pub source: RuleSource,
    /// Ids of the rules it applies to.
    pub rules: Vec<String>,
}

/// A compiled set of Sigma rules, correlations and filters, ready for an
/// [`crate::Engine`]. Immutable: to reload, build a new one.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub(crate) infos: Vec<RuleInfo>,
    pub(crate) dets: Vec<DetRule>,
    /// In dependency order: a correlation comes after those it consumes.
    pub(crate) corrs: Vec<CorrRule>,
    pub(crate) prefilter: Prefilter,
    filters: Vec<FilterInfo>,
    /// Distinct field names of all items (ids of the per-event field memo).
    pub(crate) n_fields: usize,
}

const MAX_DOCS_PER_FILE: usize = 10_000;

/// A parsed correlation waiting for linking.
struct PendingCorrelation {
    info: RuleInfo,
    spec: rule::CorrelationSpec,
    /// Whether the rules it consumes alert on their own too.
    generate: bool,
    /// Its document number in its file.
    document: Option<usize>,
}

/// A parsed filter waiting for linking.
struct PendingFilter {
    title: String,
    /// References (`id` or `name`) of the rules it applies to.
    rules: Vec<String>,
    detection: Detection,
    source: RuleSource,
    /// Its document number in its file.
    document: Option<usize>,
}

impl RuleSet {
    /// Loads every `*.yml` / `*.yaml` under the given files or directories
    /// (recursively, in name order). A path given explicitly as a file is
    /// loaded whatever its extension.
    pub fn load(paths: &[PathBuf]) -> (RuleSet, Vec<LoadError>) {
        RuleSet::load_with_builtin(false, paths)
    }

    /// [`RuleSet::load`], with the built-in pack first when `builtin` is
    /// true, compiled as one set (a file's correlation or filter may refer
    /// to a built-in rule).
    pub fn load_with_builtin(builtin: bool, paths: &[PathBuf]) -> (RuleSet, Vec<LoadError>) {
        let (files, mut errors) = RuleSet::files(paths);
        let mut sources: Vec<(RuleSource, String)> = if builtin {
            crate::builtin::FILES
                .iter()
                .map(|(name, text)| (RuleSource::Builtin((*name).to_owned()), (*text).to_owned()))
                .collect()
        } else {
            Vec::new()
        };
        for f in files {
            match std::fs::read_to_string(&f) {
                Ok(text) => sources.push((RuleSource::File(f), text)),
                Err(e) => errors.push(LoadError {
                    source: RuleSource::File(f.clone()),
                    document: None,
                    rule: None,
                    error: Error::Io { path: f, source: e },
                }),
            }
        }
        let (set, mut more) = RuleSet::build(sources);
        errors.append(&mut more);
        (set, errors)
    }

    /// The rule files `paths` name: files as given, and every `*.yml` /
    /// `*.yaml` under directories, in name order; unreadable directories
    /// are reported.
    pub fn files(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<LoadError>) {
        let mut errors = Vec::new();
        let mut files = Vec::new();
        for p in paths {
            if p.is_dir() {
                collect_dir(p, &mut files, &mut errors);
            } else {
                files.push(p.clone());
            }
        }
        (files, errors)
    }

    /// The built-in Kubernetes audit pack, embedded in the binary.
    pub fn builtin() -> (RuleSet, Vec<LoadError>) {
        RuleSet::build(
            crate::builtin::FILES
                .iter()
                .map(|(name, text)| (RuleSource::Builtin((*name).to_owned()), (*text).to_owned()))
                .collect(),
        )
    }

    /// Compiles rules given as `(name, yaml text)` pairs.
    pub fn from_sources<N: AsRef<str>, T: AsRef<str>>(
        sources: &[(N, T)],
    ) -> (RuleSet, Vec<LoadError>) {
        RuleSet::build(
            sources
                .iter()
                .map(|(n, t)| {
                    (
                        RuleSource::Inline(n.as_ref().to_owned()),
                        t.as_ref().to_owned(),
                    )
                })
                .collect(),
        )
    }

    /// Every loaded rule (detections and correlations), in load order.
    pub fn rules(&self) -> &[RuleInfo] {
        &self.infos
    }

    /// Every loaded filter.
    pub fn filters(&self) -> &[FilterInfo] {
        &self.filters
    }

    pub fn len(&self) -> usize {
        self.infos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.infos.is_empty()
    }

    fn build(sources: Vec<(RuleSource, String)>) -> (RuleSet, Vec<LoadError>) {
        let mut errors = Vec::new();
        let mut set = RuleSet::default();
        // Parsed correlations and filters wait for linking.
        let mut pending_corrs = Vec::new();
        let mut pending_filters = Vec::new();
        for (source, text) in sources {
            for (doc_no, doc) in split_documents(&text).into_iter().enumerate() {
                let document = Some(doc_no + 1);
                let doc = match doc {
                    Ok(Value::Null) => continue,
                    Ok(d) => d,
                    Err(e) => {
                        errors.push(LoadError {
                            source: source.clone(),
                            document,
                            rule: None,
                            error: e,
                        });
                        continue;
                    }
                };
                match rule::parse_doc(&doc, &source) {
                    Ok(Doc::Detection { info, detection }) => {
                        set.dets.push(DetRule {
                            info: set.infos.len(),
                            detection,
                            filters: Vec::new(),
                            emit: true,
                            feeds: false,
                        });
                        set.infos.push(info);
                    }
                    Ok(Doc::Correlation {
                        info,
                        spec,
                        generate,
                    }) => pending_corrs.push(PendingCorrelation {
                        info,
                        spec,
                        generate,
                        document,
                    }),
                    Ok(Doc::Filter {
                        title,
                        rules,
                        detection,
                    }) => pending_filters.push(PendingFilter {
                        title,
                        rules,
                        detection,
                        source: source.clone(),
                        document,
                    }),
                    Err(error) => errors.push(LoadError {
                        source: source.clone(),
                        document,
                        rule: rule::label(&doc),
                        error,
                    }),
                }
            }
        }
        set.link_correlations(pending_corrs, &mut errors);
        set.link_filters(pending_filters, &mut errors);
        let mut ids = set.intern_fields();
        set.prefilter = Prefilter::build(&set.dets);
        set.prefilter.intern(&mut ids);
        set.n_fields = ids.len();
        (set, errors)
    }

    /// Gives every item's field name an id, shared by equal names.
    fn intern_fields(&mut self) -> HashMap<String, u32> {
        let mut ids: HashMap<String, u32> = HashMap::new();
        for det in &mut self.dets {
            let DetRule {
                detection, filters, ..
            } = det;
            for item in std::iter::once(detection)
                .chain(filters.iter_mut())
                .flat_map(Detection::items_mut)
            {
                if let Some(f) = &item.field {
                    let next = ids.len() as u32;
                    item.field_id = *ids.entry(f.clone()).or_insert(next);
                }
            }
        }
        ids
    }

    /// Finds the rule `reference` names, preferring the referrer's file.
    fn lookup(
        reference: &str,
        from: &RuleSource,
        candidates: &[(usize, &RuleInfo)],
    ) -> Option<usize> {
        let hits = candidates
            .iter()
            .filter(|(_, i)| i.id == reference || i.name.as_deref() == Some(reference));
        let mut first = None;
        for (k, info) in hits {
            if &info.source == from {
                return Some(*k);
            }
            first = first.or(Some(*k));
        }
        first
    }

    fn link_correlations(&mut self, pending: Vec<PendingCorrelation>, errors: &mut Vec<LoadError>) {
        let det_cands: Vec<(usize, &RuleInfo)> = self
            .dets
            .iter()
            .enumerate()
            .map(|(k, d)| (k, &self.infos[d.info]))
            .collect();
        let corr_cands: Vec<(usize, &RuleInfo)> = pending
            .iter()
            .enumerate()
            .map(|(k, p)| (k, &p.info))
            .collect();
        // Resolve references: Ok(inputs) or the first unknown reference.
        let mut resolved: Vec<Result<Vec<Input>, Error>> = pending
            .iter()
            .map(|PendingCorrelation { info, spec, .. }| {
                spec.rules
                    .iter()
                    .map(|r| {
                        RuleSet::lookup(r, &info.source, &det_cands)
                            .map(Input::Det)
                            .or_else(|| {
                                RuleSet::lookup(r, &info.source, &corr_cands).map(Input::Corr)
                            })
                            .ok_or_else(|| Error::UnknownReference(r.clone()))
                    })
                    .collect()
            })
            .collect();
        // Dependency order (Kahn); what is left is in or behind a cycle, or
        // depends on a correlation that failed.
        let n = pending.len();
        let mut order = Vec::with_capacity(n);
        let mut placed = vec![false; n];
        loop {
            let mut progress = false;
            for k in 0..n {
                if placed[k] {
                    continue;
                }
                let ready = match &resolved[k] {
                    Ok(inputs) => inputs.iter().all(|i| match i {
                        Input::Det(_) => true,
                        Input::Corr(j) => placed[*j] && resolved[*j].is_ok(),
                    }),
                    Err(_) => true,
                };
                let dep_failed = match &resolved[k] {
                    Ok(inputs) => inputs.iter().find_map(|i| match i {
                        Input::Corr(j) if placed[*j] && resolved[*j].is_err() => {
                            Some(pending[*j].info.id.clone())
                        }
                        _ => None,
                    }),
                    Err(_) => None,
                };
                if let Some(dep) = dep_failed {
                    resolved[k] = Err(Error::UnknownReference(dep));
                }
                if ready || resolved[k].is_err() {
                    placed[k] = true;
                    order.push(k);
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
        for k in 0..n {
            if !placed[k] {
                resolved[k] = Err(Error::Cycle(pending[k].info.id.clone()));
                order.push(k);
            }
        }
        // Emit compiled correlations in dependency order.
        let mut new_index = vec![usize::MAX; n];
        let mut consumers_generate: Vec<Option<bool>> = vec![None; self.dets.len()];
        let mut corr_generate: Vec<Option<bool>> = vec![None; n];
        let mut pending: Vec<Option<_>> = pending.into_iter().map(Some).collect();
        for k in order {
            let Some(PendingCorrelation {
                info,
                spec,
                generate,
                document,
            }) = pending[k].take()
            else {
                continue;
            };
            let inputs = match std::mem::replace(&mut resolved[k], Ok(Vec::new())) {
                Ok(i) => i,
                Err(error) => {
                    errors.push(LoadError {
                        source: info.source.clone(),
                        document,
                        rule: Some(info.title.clone()),
                        error,
                    });
                    continue;
                }
            };
            let inputs: Vec<Input> = inputs
                .into_iter()
                .map(|i| match i {
                    Input::Det(d) => {
                        self.dets[d].feeds = true;
                        let g = consumers_generate[d].unwrap_or(false);
                        consumers_generate[d] = Some(g || generate);
                        Input::Det(d)
                    }
                    Input::Corr(j) => {
                        let g = corr_generate[j].unwrap_or(false);
                        corr_generate[j] = Some(g || generate);
                        Input::Corr(new_index[j])
                    }
                })
                .collect();
            let group_by = spec
                .group_by
                .iter()
                .map(|g| {
                    let per_input = spec
                        .rules
                        .iter()
                        .zip(&inputs)
                        .map(|(reference, input)| {
                            alias_field(&spec.aliases, g, reference, *input, self)
                                .unwrap_or_else(|| g.clone())
                        })
                        .collect();
                    (g.clone(), per_input)
                })
                .collect();
            new_index[k] = self.corrs.len();
            self.corrs.push(CorrRule {
                info: self.infos.len(),
                kind: spec.kind,
                inputs,
                group_by,
                timespan: spec.timespan,
                condition: spec.condition,
                field: spec.field,
                emit: true,
            });
            self.infos.push(info);
        }
        for (d, g) in consumers_generate.into_iter().enumerate() {
            if let Some(g) = g {
                self.dets[d].emit = g;
            }
        }
        for (k, g) in corr_generate.into_iter().enumerate() {
            let corr = new_index.get(k).and_then(|c| self.corrs.get_mut(*c));
            if let (Some(g), Some(c)) = (g, corr) {
                c.emit = g;
            }
        }
    }

    fn link_filters(&mut self, pending: Vec<PendingFilter>, errors: &mut Vec<LoadError>) {
        for PendingFilter {
            title,
            rules: refs,
            detection,
            source,
            document,
        } in pending
        {
            let cands: Vec<(usize, &RuleInfo)> = self
                .dets
                .iter()
                .enumerate()
                .map(|(k, d)| (k, &self.infos[d.info]))
                .collect();
            let mut targets = Vec::new();
            for r in &refs {
                match RuleSet::lookup(r, &source, &cands) {
                    Some(k) => targets.push(k),
                    None => errors.push(LoadError {
                        source: source.clone(),
                        document,
                        rule: Some(title.clone()),
                        error: Error::UnknownReference(r.clone()),
                    }),
                }
            }
            let ids = targets
                .iter()
                .map(|k| self.infos[self.dets[*k].info].id.clone())
                .collect();
            for k in targets {
                self.dets[k].filters.push(detection.clone());
            }
            self.filters.push(FilterInfo {
                title,
                source,
                rules: ids,
            });
        }
    }
}

/// The field an alias stands for in events of one input rule.
fn alias_field(
    aliases: &[(String, Vec<(String, String)>)],
    group: &str,
    reference: &str,
    input: Input,
    set: &RuleSet,
) -> Option<String> {
    let (_, pairs) = aliases.iter().find(|(a, _)| a == group)?;
    let info = match input {
        Input::Det(d) => set.dets.get(d).map(|d| &set.infos[d.info]),
        Input::Corr(c) => set.corrs.get(c).map(|c| &set.infos[c.info]),
    };
    pairs
        .iter()
        .find(|(rule, _)| {
            rule == reference
                || info.is_some_and(|i| &i.id == rule || i.name.as_deref() == Some(rule))
        })
        .map(|(_, f)| f.clone())
}

/// Splits a YAML stream into documents, each converted to JSON values
/// (which is all Sigma needs and what the matchers are built from).
fn split_documents(text: &str) -> Vec<Result<Value, Error>> {
    let mut out = Vec::new();
    let mut last_err: Option<String> = None;
    for de in serde_norway::Deserializer::from_str(text) {
        match Value::deserialize(de) {
            Ok(v) => {
                last_err = None;
                out.push(Ok(v));
            }
            Err(e) => {
                let msg = e.to_string();
                // After a syntax error the parser cannot resynchronise and
                // repeats itself: report it once.
                if last_err.as_deref() == Some(msg.as_str()) {
                    break;
                }
                last_err = Some(msg.clone());
                out.push(Err(Error::Yaml(msg)));
            }
        }
        if out.len() >= MAX_DOCS_PER_FILE {
            break;
        }
    }
    out
}

fn collect_dir(dir: &Path, files: &mut Vec<PathBuf>, errors: &mut Vec<LoadError>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push(LoadError {
                source: RuleSource::File(dir.to_owned()),
                document: None,
                rule: None,
                error: Error::Io {
                    path: dir.to_owned(),
                    source: e,
                },
            });
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            collect_dir(&p, files, errors);
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("yml") || e.eq_ignore_ascii_case("yaml"))
        {
            files.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_errors_are_per_document() {
        let docs = split_documents("a: 1\n---\nb: [\n");
        assert!(docs[0].is_ok());
        assert!(docs.iter().any(Result::is_err));
    }
}

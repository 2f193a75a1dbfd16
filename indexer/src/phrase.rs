//! Phrases over `_all`, which is indexed without positions.
//!
//! `_all` holds the short string values of audit events. Its positions took
//! as many bytes on disk as all of its postings (BENCHMARKS.md), so
//! a phrase over it is answered in two steps: the conjunction of its words
//! finds the candidates from the postings, then each candidate's stored
//! record is read and the phrase is looked for, word after word, inside one
//! of the values that went to `_all` (the same values as
//! [`crate::document::build_parsed`] indexed, through
//! [`crate::document::for_each_all_value`]). A phrase never spans two
//! values, which positions over a multi-valued field would allow.
//!
//! The cost moves from ingest to the phrases themselves: one stored record
//! read per candidate. Phrases whose words are rare together (user names,
//! service accounts, paths) have few candidates besides their hits; the
//! document store's block cache makes neighbouring candidates cheap.

use std::fmt;

use serde_json::{Map, Value};
use tantivy::query::{
    BooleanQuery, EnableScoring, Explanation, Occur, Query, Scorer, TermQuery, Weight,
};
use tantivy::schema::document::{ReferenceValue, ReferenceValueLeaf, Value as _};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::store::StoreReader;
use tantivy::{DocId, DocSet, Score, SegmentReader, TERMINATED, TantivyDocument, Term};

use crate::document::for_each_all_value;
use crate::schema::text_analyzer;

/// Blocks of the document store a phrase keeps decompressed per segment.
const STORE_CACHE_BLOCKS: usize = 4;

/// The words of a phrase over `_all`, in order, checked on stored records.
#[derive(Clone)]
pub struct StoredPhraseQuery {
    terms: Vec<Term>,
    words: Vec<String>,
    source: Field,
}

impl fmt::Debug for StoredPhraseQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredPhraseQuery")
            .field("words", &self.words)
            .finish()
    }
}

impl StoredPhraseQuery {
    /// `words` are the analyzed tokens of the phrase (at least two), in
    /// `field`; `source` is the stored record.
    pub fn new(field: Field, words: Vec<String>, source: Field) -> StoredPhraseQuery {
        let terms = words
            .iter()
            .map(|w| Term::from_field_text(field, w))
            .collect();
        StoredPhraseQuery {
            terms,
            words,
            source,
        }
    }
}

impl Query for StoredPhraseQuery {
    fn weight(&self, scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        let conjunction = BooleanQuery::new(
            self.terms
                .iter()
                .map(|t| {
                    let q: Box<dyn Query> =
                        Box::new(TermQuery::new(t.clone(), IndexRecordOption::Basic));
                    (Occur::Must, q)
                })
                .collect(),
        );
        Ok(Box::new(StoredPhraseWeight {
            candidates: conjunction.weight(scoring)?,
            words: self.words.clone(),
            source: self.source,
        }))
    }

    fn query_terms<'a>(&'a self, visitor: &mut dyn FnMut(&'a Term, bool)) {
        for term in &self.terms {
            visitor(term, false);
        }
    }
}

struct StoredPhraseWeight {
    candidates: Box<dyn Weight>,
    words: Vec<String>,
    source: Field,
}

impl Weight for StoredPhraseWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let mut scorer = StoredPhraseScorer {
            candidates: self.candidates.scorer(reader, boost)?,
            store: reader.get_store_reader(STORE_CACHE_BLOCKS)?,
            words: self.words.clone(),
            source: self.source,
        };
        let first = scorer.candidates.doc();
        if first != TERMINATED && !scorer.matches(first) {
            scorer.advance();
        }
        Ok(Box::new(scorer))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        let mut scorer = self.scorer(reader, 1.0)?;
        if scorer.seek(doc) != doc {
            return Err(tantivy::TantivyError::InvalidArgument(format!(
                "document {doc} does not contain the phrase"
            )));
        }
        Ok(Explanation::new("stored phrase", scorer.score()))
    }
}

struct StoredPhraseScorer {
    candidates: Box<dyn Scorer>,
    store: StoreReader,
    words: Vec<String>,
    source: Field,
}

impl StoredPhraseScorer {
    /// Whether the stored record of `doc` has the phrase in one value. A
    /// record that cannot be read or parsed does not match (and verify
    /// reports the damage; a search is not the place to fail on it).
    fn matches(&self, doc: DocId) -> bool {
        let Ok(stored) = self.store.get::<TantivyDocument>(doc) else {
            return false;
        };
        let Some(bytes) = stored
            .get_first(self.source)
            .and_then(|v| match v.as_value() {
                ReferenceValue::Leaf(ReferenceValueLeaf::Bytes(b)) => Some(b),
                _ => None,
            })
        else {
            return false;
        };
        let Ok(hit) = serde_json::from_slice::<Map<String, Value>>(bytes) else {
            return false;
        };
        contains_phrase(&hit, &self.words)
    }
}

/// Whether one of the `_all` values of a stored record has `words` as
/// consecutive tokens.
pub(crate) fn contains_phrase(hit: &Map<String, Value>, words: &[String]) -> bool {
    let mut analyzer = text_analyzer();
    let mut found = false;
    let mut tokens: Vec<String> = Vec::new();
    for_each_all_value(hit, |value| {
        if found {
            return;
        }
        tokens.clear();
        let mut stream = analyzer.token_stream(value);
        while stream.advance() {
            tokens.push(stream.token().text.clone());
        }
        found = tokens.windows(words.len()).any(|w| w == words);
    });
    found
}

impl DocSet for StoredPhraseScorer {
    fn advance(&mut self) -> DocId {
        loop {
            let doc = self.candidates.advance();
            if doc == TERMINATED || self.matches(doc) {
                return doc;
            }
        }
    }

    fn seek(&mut self, target: DocId) -> DocId {
        if self.candidates.doc() >= target {
            return self.candidates.doc();
        }
        let doc = self.candidates.seek(target);
        if doc == TERMINATED || self.matches(doc) {
            return doc;
        }
        self.advance()
    }

    fn doc(&self) -> DocId {
        self.candidates.doc()
    }

    fn size_hint(&self) -> u32 {
        self.candidates.size_hint()
    }
}

impl Scorer for StoredPhraseScorer {
    fn score(&mut self) -> Score {
        self.candidates.score()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn a_phrase_is_found_inside_one_value_only() {
        let hit = json!({
            "source": "audit",
            "user": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "verb": "create",
            "objectRef": {"name": "web-1", "namespace": "prod"},
            "requestObject": {"note": "alpha beta"}
        });
        let hit = hit.as_object().unwrap();
        assert!(contains_phrase(hit, &words("kube system replicaset")));
        assert!(contains_phrase(hit, &words("web 1")));
        // Words of two different values are not a phrase.
        assert!(!contains_phrase(hit, &words("create web")));
        // Out of order.
        assert!(!contains_phrase(hit, &words("replicaset system")));
        // Request bodies are not in `_all`.
        assert!(!contains_phrase(hit, &words("alpha beta")));
    }

    #[test]
    fn container_lines_have_no_all_values() {
        let hit =
            json!({"source": "container", "message": "connection refused", "stream": "stderr"});
        assert!(!contains_phrase(
            hit.as_object().unwrap(),
            &words("connection refused")
        ));
    }
}

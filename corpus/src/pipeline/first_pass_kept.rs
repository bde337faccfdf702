//! Kept documents written during pass 1, so a run without a near-duplicate pass need not read
//! its input twice.
//!
//! Pass 1 already knows every verdict but exact dedup's. A document the rules and
//! decontamination keep is written as it is read unless an earlier kept document has its exact
//! key; the examples are chosen the same way. Exact dedup's keeper is the longest copy, so a
//! later, longer copy makes the guess wrong: [`FirstPassKept::matches`] compares the guess with
//! the final verdicts, and the run then writes `kept/` from a second read as before. Either way
//! the files are the same bytes (documents in id order, the same batches).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::Result;
use crate::filters::RuleSet;
use crate::hashing::{IdentityBuild, mix};
use crate::ids::DocId;
use crate::ingest::Document;
use crate::kept::KeptWriter;
use crate::profile::{DocRecord, DropReason};

use super::{EXAMPLE_CHARS, EXAMPLES_PER_REASON, Example};

/// The documents shown in `examples.jsonl`: the lowest ids per (domain, reason), for drop
/// reasons and for rules that flagged kept documents; fed records in id order.
#[derive(Default)]
pub(super) struct ExamplePicker {
    seen: BTreeMap<(String, String), usize>,
}

impl ExamplePicker {
    /// The reason a document of `domain` with these verdicts is shown under, if it is.
    pub(super) fn offer(
        &mut self,
        domain: &str,
        drop: Option<DropReason>,
        rules: RuleSet,
        benchmarks: &[String],
    ) -> Option<String> {
        let reasons: Vec<String> = match drop {
            Some(d) => vec![d.name(benchmarks)],
            None => rules.iter().map(|rule| format!("flagged:{}", rule.name())).collect(),
        };
        let mut shown = None;
        for reason in reasons {
            let n = self.seen.entry((domain.to_string(), reason.clone())).or_default();
            if *n < EXAMPLES_PER_REASON {
                *n += 1;
                shown.get_or_insert(reason);
            }
        }
        shown
    }
}

/// An example of `doc`: the start of its text.
pub(super) fn example(domain: &str, reason: String, doc: &Document) -> Example {
    Example {
        domain: domain.to_string(),
        reason,
        doc_id: doc.id.to_string(),
        source_id: doc.source_id.clone(),
        excerpt: doc.text.chars().take(EXAMPLE_CHARS).collect(),
    }
}

/// The kept documents and examples of pass 1's guess.
pub(super) struct FirstPassKept {
    writer: KeptWriter,
    /// Whether each document (in id order) was written.
    written: Vec<bool>,
    /// Exact keys (with their dedup scope) of the documents written; `None` without exact dedup.
    exact_keys: Option<hashbrown::HashSet<u64, IdentityBuild>>,
    picker: ExamplePicker,
    examples: Vec<Example>,
    benchmarks: Vec<String>,
}

impl FirstPassKept {
    pub(super) fn new(writer: KeptWriter, exact_dedup: bool, benchmarks: Vec<String>) -> FirstPassKept {
        FirstPassKept {
            writer,
            written: Vec::new(),
            exact_keys: exact_dedup.then(hashbrown::HashSet::default),
            picker: ExamplePicker::default(),
            examples: Vec::new(),
            benchmarks,
        }
    }

    /// One document after pass 1, in id order, with its exact key and dedup scope.
    pub(super) fn push(
        &mut self,
        domain: &str,
        record: &DocRecord,
        exact: u128,
        scope: u32,
        doc: Document,
    ) -> Result<()> {
        let drop = record.drop.or_else(|| {
            let keys = self.exact_keys.as_mut()?;
            // 64 bits of the 128-bit key: a collision only makes the guess wrong, never the output.
            (!keys.insert(mix(exact as u64, u64::from(scope)))).then_some(DropReason::ExactDup)
        });
        if let Some(reason) = self.picker.offer(domain, drop, record.rules, &self.benchmarks) {
            self.examples.push(example(domain, reason, &doc));
        }
        self.written.push(drop.is_none());
        if drop.is_none() {
            self.writer.push(domain, doc)?;
        }
        Ok(())
    }

    /// Whether the guess holds: the same documents kept as `records` say, and the same
    /// examples as `picked`.
    pub(super) fn matches(&self, records: &[DocRecord], picked: &BTreeMap<DocId, (String, String)>) -> bool {
        self.written.len() == records.len()
            && self.written.iter().zip(records).all(|(&written, r)| written == r.drop.is_none())
            && self.examples.len() == picked.len()
            && self
                .examples
                .iter()
                .zip(picked)
                .all(|(e, (id, (_, reason)))| e.doc_id == id.to_string() && e.reason == *reason)
    }

    /// Commits the kept files; returns them by domain, and the examples.
    pub(super) fn finish(self) -> Result<(BTreeMap<String, PathBuf>, Vec<Example>)> {
        Ok((self.writer.finish()?, self.examples))
    }
}

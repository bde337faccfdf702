//! Where every document went: in = kept + Σ dropped, per source, per domain and in total;
//! malformed records are counted apart as rejected.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Document and byte counts of one source, domain, or the whole run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Documents read.
    pub docs_in: u64,
    /// Documents kept.
    pub docs_kept: u64,
    /// Documents dropped, by reason (`filter:<rule>`, `exact_dup`, `near_dup`).
    pub dropped: BTreeMap<String, u64>,
    /// Malformed records, by reason; not part of `docs_in`.
    pub rejected: BTreeMap<String, u64>,
    /// Text bytes read.
    pub bytes_in: u64,
    /// Text bytes kept.
    pub bytes_kept: u64,
    /// Text bytes dropped, by reason.
    pub bytes_dropped: BTreeMap<String, u64>,
    /// Raw bytes of rejected records, by reason (0 where unknown, as for a cut archive).
    pub bytes_rejected: BTreeMap<String, u64>,
    /// Documents failing each quality rule, whether or not the filter drops them.
    pub filter_flagged: BTreeMap<String, u64>,
    /// Documents containing an item of each benchmark, whether or not they are dropped.
    pub contaminated: BTreeMap<String, u64>,
}

impl Counts {
    /// Counts a document of `bytes`, dropped for `reason` or kept.
    pub fn add_doc(&mut self, bytes: u64, reason: Option<&str>) {
        self.docs_in += 1;
        self.bytes_in += bytes;
        match reason {
            None => {
                self.docs_kept += 1;
                self.bytes_kept += bytes;
            }
            Some(reason) => {
                *self.dropped.entry(reason.to_string()).or_default() += 1;
                *self.bytes_dropped.entry(reason.to_string()).or_default() += bytes;
            }
        }
    }

    /// Counts a rejected record.
    pub fn add_reject(&mut self, code: &str, bytes: u64) {
        *self.rejected.entry(code.to_string()).or_default() += 1;
        *self.bytes_rejected.entry(code.to_string()).or_default() += bytes;
    }

    /// Counts a failed rule.
    pub fn add_flag(&mut self, rule: &str) {
        *self.filter_flagged.entry(rule.to_string()).or_default() += 1;
    }

    /// Counts a contaminated document.
    pub fn add_contaminated(&mut self, benchmark: &str) {
        *self.contaminated.entry(benchmark.to_string()).or_default() += 1;
    }

    /// Whether `docs_in = docs_kept + Σ dropped` and the same for bytes.
    pub fn balances(&self) -> bool {
        self.docs_in == self.docs_kept + self.dropped.values().sum::<u64>()
            && self.bytes_in == self.bytes_kept + self.bytes_dropped.values().sum::<u64>()
    }

    /// Total rejected records.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

/// One source's counts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceCounts {
    /// Source name.
    pub name: String,
    /// Its domain.
    pub domain: String,
    /// Its files, in id order.
    pub files: Vec<String>,
    /// Its counts.
    #[serde(flatten)]
    pub counts: Counts,
}

/// The run's accounting, as written to `manifest.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Accounting {
    /// Per source, in recipe order.
    pub sources: Vec<SourceCounts>,
    /// Per domain.
    pub domains: BTreeMap<String, Counts>,
    /// The whole run.
    pub totals: Counts,
}

impl Accounting {
    /// Applies `f` to the counts of source `source`, its domain and the totals.
    pub fn update(&mut self, source: usize, mut f: impl FnMut(&mut Counts)) {
        f(&mut self.sources[source].counts);
        let domain = self.sources[source].domain.clone();
        f(self.domains.entry(domain).or_default());
        f(&mut self.totals);
    }

    /// Whether every level balances.
    pub fn balances(&self) -> bool {
        self.totals.balances()
            && self.domains.values().all(Counts::balances)
            && self.sources.iter().all(|s| s.counts.balances())
    }
}

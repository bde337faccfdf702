//! A domain's documents as training and validation segments: the one place that decides what
//! counts as a domain's training tokens, so the trainer's loader, the mixture simulator's
//! budgets and materialized mixes agree on every count and epoch.

use super::{Shard, Shards, Split, TokenSlice};
use crate::error::Result;

/// Tokens `[start, end)` of document `doc` in shard `shard` of a [`DomainSegments`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Index into [`DomainSegments::shards`].
    pub shard: usize,
    /// Document within that shard.
    pub doc: usize,
    /// First token.
    pub start: usize,
    /// One past the last token.
    pub end: usize,
}

impl Segment {
    /// Its token count.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether it holds no token.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// One domain's open shards, split into training and validation segments.
pub struct DomainSegments {
    /// The domain.
    pub name: String,
    /// Its shards, both splits.
    pub shards: Vec<Shard>,
    /// Training segments in shard order.
    pub train: Vec<Segment>,
    /// Validation segments in shard order.
    pub val: Vec<Segment>,
}

impl DomainSegments {
    /// Opens a domain. Empty documents are skipped. A domain whose documents all fell in the
    /// training split (one long book, say) holds out the last `val_fraction` (at least 1%, at
    /// most half) of its training tokens for validation instead, so every domain can be
    /// measured and no validation token is ever trained on.
    pub fn open(shards: &Shards, name: &str) -> Result<DomainSegments> {
        let mut open = Vec::new();
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for split in [Split::Train, Split::Val] {
            for shard in shards.shards(name, split)? {
                let idx = open.len();
                for doc in 0..shard.len() {
                    let seg = Segment { shard: idx, doc, start: 0, end: shard.doc(doc).len() };
                    if !seg.is_empty() {
                        if split == Split::Train { train.push(seg) } else { val.push(seg) }
                    }
                }
                open.push(shard);
            }
        }
        if val.is_empty() && !train.is_empty() {
            let total: usize = train.iter().map(Segment::len).sum();
            let fraction = shards.manifest().val_fraction.max(0.01);
            let mut holdout = ((total as f64 * fraction).ceil() as usize).min(total / 2);
            while holdout > 0 {
                let last = train.last_mut().expect("holdout ≤ half the tokens");
                let take = holdout.min(last.len());
                val.insert(0, Segment { start: last.end - take, ..*last });
                last.end -= take;
                holdout -= take;
                if last.is_empty() {
                    train.pop();
                }
            }
        }
        Ok(DomainSegments { name: name.to_string(), shards: open, train, val })
    }

    /// The tokens of a segment.
    pub fn tokens(&self, seg: &Segment) -> Vec<u32> {
        let doc: TokenSlice<'_> = self.shards[seg.shard].doc(seg.doc);
        (seg.start..seg.end).map(|i| doc.get(i)).collect()
    }

    /// The document id of a segment.
    pub fn doc_id(&self, seg: &Segment) -> u64 {
        self.shards[seg.shard].doc_id(seg.doc).get()
    }

    /// Training tokens counting one end-of-document separator per segment: what one epoch
    /// of this domain costs a trainer that packs documents with EOS.
    pub fn train_tokens(&self) -> u64 {
        self.train.iter().map(|s| s.len() as u64 + 1).sum()
    }

    /// Keeps the first `fraction` of the training tokens (cutting the last segment kept):
    /// a proxy trained on this subset repeats the domain as often as a run `1 / fraction`
    /// times longer repeats all of it.
    pub fn keep_train_fraction(&mut self, fraction: f64) {
        if fraction >= 1.0 {
            return;
        }
        let total = self.train_tokens();
        let mut budget = ((total as f64 * fraction.max(0.0)).round() as u64).max(2);
        let mut kept = Vec::new();
        for seg in &self.train {
            if budget < 2 {
                break;
            }
            let take = (seg.len() as u64).min(budget - 1) as usize;
            kept.push(Segment { end: seg.start + take, ..*seg });
            budget -= take as u64 + 1;
        }
        self.train = kept;
    }
}

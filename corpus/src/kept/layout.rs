//! Where a domain's kept documents are cut into batches and row groups. The cuts depend only on
//! the documents' text lengths, in order, so the reduce of a sharded run can compute them for the
//! whole file before any task writes a row of it ([`layout`]), and tasks that each write a slice
//! produce the single writer's row groups.

use serde::{Deserialize, Serialize};

/// A batch is written once it holds this many documents or bytes of text.
pub(super) const BATCH_DOCS: usize = 1024;
pub(super) const BATCH_BYTES: usize = 32 << 20;
/// Rows per row group, as `ArrowWriter` cuts them.
pub(super) const ROW_GROUP_ROWS: usize = 8192;
/// A row group also ends once its batches hold this much text: row groups are held
/// uncompressed until they are full, and 8,192 long documents would be gigabytes.
const ROW_GROUP_TEXT_BYTES: usize = 64 << 20;

/// Consecutive rows written to the column writers in one call: a batch, or the part of one
/// that falls in a row group. Page boundaries depend on these calls, so a file is reproduced
/// byte for byte only from the same pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    /// Rows in the piece.
    pub rows: u32,
    /// Whether the row group ends after it.
    pub ends_group: bool,
}

/// The state of the cutting: the batch being gathered and the row group being filled.
#[derive(Debug, Default)]
pub(super) struct Cuts {
    pending_rows: usize,
    pending_bytes: usize,
    group_rows: usize,
    group_bytes: usize,
}

impl Cuts {
    /// A document of `len` bytes of text joins the batch; true when the batch is due.
    pub(super) fn push(&mut self, len: usize) -> bool {
        self.pending_rows += 1;
        self.pending_bytes += len;
        self.pending_rows >= BATCH_DOCS || self.pending_bytes >= BATCH_BYTES
    }

    /// The batch of documents of text lengths `lens` cut where row groups end: at
    /// [`ROW_GROUP_ROWS`] rows, or once a group holds [`ROW_GROUP_TEXT_BYTES`] of text.
    pub(super) fn cut(&mut self, lens: &[usize]) -> Vec<Piece> {
        (self.pending_rows, self.pending_bytes) = (0, 0);
        let mut pieces = Vec::new();
        let mut rest = lens;
        while !rest.is_empty() {
            let fits = (ROW_GROUP_ROWS - self.group_rows).min(rest.len());
            let (piece, after) = rest.split_at(fits);
            self.group_rows += fits;
            self.group_bytes += piece.iter().sum::<usize>();
            let ends_group = self.group_rows == ROW_GROUP_ROWS || self.group_bytes >= ROW_GROUP_TEXT_BYTES;
            if ends_group {
                (self.group_rows, self.group_bytes) = (0, 0);
            }
            pieces.push(Piece { rows: fits as u32, ends_group });
            rest = after;
        }
        pieces
    }
}

/// The pieces a writer makes of documents of text lengths `lens`, in order; the last piece
/// ends the last row group.
pub fn layout(lens: impl IntoIterator<Item = usize>) -> Vec<Piece> {
    let mut cuts = Cuts::default();
    let (mut pending, mut pieces) = (Vec::new(), Vec::new());
    for len in lens {
        pending.push(len);
        if cuts.push(len) {
            pieces.extend(cuts.cut(&pending));
            pending.clear();
        }
    }
    pieces.extend(cuts.cut(&pending));
    if let Some(last) = pieces.last_mut() {
        last.ends_group = true;
    }
    pieces
}

/// The row groups of `pieces` as row ranges `[start, end)`, each with its pieces' index range.
pub fn groups(pieces: &[Piece]) -> Vec<(std::ops::Range<u64>, std::ops::Range<usize>)> {
    let (mut out, mut row, mut group_row, mut first) = (Vec::new(), 0u64, 0u64, 0usize);
    for (k, piece) in pieces.iter().enumerate() {
        row += u64::from(piece.rows);
        if piece.ends_group {
            out.push((group_row..row, first..k + 1));
            (group_row, first) = (row, k + 1);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_end_at_8192_rows_or_64_mib_of_text() {
        let pieces = layout(vec![10; 20_000]);
        let rows: Vec<u64> = groups(&pieces).iter().map(|(r, _)| r.end - r.start).collect();
        assert_eq!(rows, [8192, 8192, 3616]);
        assert!(pieces.iter().all(|p| p.rows <= 1024));
        // 1 MiB documents: a batch is due at 32 of them, a group ends at 64.
        let pieces = layout(vec![1 << 20; 100]);
        assert_eq!(pieces.iter().map(|p| p.rows).collect::<Vec<_>>(), [32, 32, 32, 4]);
        let rows: Vec<u64> = groups(&pieces).iter().map(|(r, _)| r.end - r.start).collect();
        assert_eq!(rows, [64, 36]);
        assert!(layout([]).is_empty());
    }
}

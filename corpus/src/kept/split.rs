//! A kept file written by several tasks, each holding a contiguous slice of its rows, then
//! merged into the file one writer would have written, byte for byte.
//!
//! The cut of the whole file into pieces and row groups ([`super::layout`]) is known before
//! any task starts. A task encodes the row groups that lie wholly in its slice, as the single
//! writer does, into `<domain>.groups.parquet`, and keeps the rows of the row groups it shares
//! with a neighbour in `<domain>.edges.parquet`. The merge appends every task's encoded row
//! groups as they are (column chunks copied, offsets moved) and encodes only the shared ones,
//! from the edge rows, with the same pieces: each task compresses its own share.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataOptions, ParquetMetaDataReader};
use serde::{Deserialize, Serialize};

use super::{DomainWriter, Pending, Piece, groups, schema, to_batch};
use crate::atomic::AtomicFile;
use crate::error::{Error, Result};
use crate::ingest::Document;

/// One domain's rows as a sharded finish splits them: the whole file's pieces and, per task,
/// its slice's first row and row count (tasks in order, slices contiguous).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slices {
    /// The cut of the whole file.
    pub pieces: Vec<Piece>,
    /// Per task: `(first row, rows)`.
    pub slices: Vec<(u64, u64)>,
}

impl Slices {
    /// The task whose slice holds every row of `rows`, if one does.
    fn owner(&self, rows: &Range<u64>) -> Option<usize> {
        self.slices.iter().position(|&(start, n)| start <= rows.start && rows.end <= start + n)
    }
}

/// Where a run of a task's rows goes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Dest {
    /// A piece of a row group in the task's slice alone.
    Group { ends_group: bool },
    /// Rows of a row group shared with another task.
    Edge,
}

/// The runs of rows of task `task` in order, each with where it goes.
fn runs(slices: &Slices, task: usize) -> VecDeque<(usize, Dest)> {
    let (start, n) = slices.slices[task];
    let end = start + n;
    let mut out = VecDeque::new();
    for (rows, pieces) in groups(&slices.pieces) {
        if rows.end <= start || rows.start >= end {
            continue;
        }
        let own = slices.owner(&rows) == Some(task);
        let mut row = rows.start;
        for piece in &slices.pieces[pieces] {
            let (a, b) = (row.max(start), (row + u64::from(piece.rows)).min(end));
            row += u64::from(piece.rows);
            if a < b {
                let dest = if own { Dest::Group { ends_group: piece.ends_group } } else { Dest::Edge };
                out.push_back(((b - a) as usize, dest));
            }
        }
    }
    out
}

/// Row groups task `task` encodes, and rows it leaves to the merge, over every domain.
pub fn planned(domains: &BTreeMap<String, Slices>, task: usize) -> (usize, usize) {
    let runs = domains.values().flat_map(|slices| runs(slices, task));
    runs.fold((0, 0), |(groups, edge_rows), (rows, dest)| match dest {
        Dest::Group { ends_group } => (groups + usize::from(ends_group), edge_rows),
        Dest::Edge => (groups, edge_rows + rows),
    })
}

/// A task's share of one domain's file.
struct Share {
    runs: VecDeque<(usize, Dest)>,
    pending: Vec<Pending>,
    groups: Option<DomainWriter>,
    edges: Option<(ArrowWriter<AtomicFile>, PathBuf)>,
}

/// Writes one task's slices of the kept files into `dir`; the files appear on [`finish`](Self::finish).
pub struct SliceWriter {
    dir: PathBuf,
    schema: SchemaRef,
    source_names: Vec<String>,
    shares: BTreeMap<String, Share>,
}

impl SliceWriter {
    /// Task `task`'s slices of `domains` (every domain the run keeps documents of).
    pub fn new(
        dir: &Path,
        source_names: Vec<String>,
        domains: &BTreeMap<String, Slices>,
        task: usize,
    ) -> Result<SliceWriter> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), cause: source })?;
        let shares = domains
            .iter()
            .map(|(domain, slices)| {
                let share = Share { runs: runs(slices, task), pending: Vec::new(), groups: None, edges: None };
                (domain.clone(), share)
            })
            .collect();
        Ok(SliceWriter { dir: dir.to_path_buf(), schema: Arc::new(schema()), source_names, shares })
    }

    /// The task's next kept document of `domain`, in document order.
    pub fn push(&mut self, domain: &str, doc: Document) -> Result<()> {
        let changed = |why: &str| Error::Corrupt {
            path: self.dir.clone(),
            reason: format!("document {} of domain {domain}: {why}; rerun the reduce", doc.id),
        };
        let share = self.shares.get_mut(domain).ok_or_else(|| changed("the reduce kept none of this domain"))?;
        let &(rows, dest) = share.runs.front().ok_or_else(|| changed("more kept documents than the reduce planned"))?;
        share.pending.push((doc.id.get(), doc.source_id, usize::from(doc.source.0), doc.text));
        if share.pending.len() < rows {
            return Ok(());
        }
        share.runs.pop_front();
        let bytes = share.pending.iter().map(|p| p.3.len()).sum();
        let batch = to_batch(share.pending.drain(..), bytes, domain, &self.schema, &self.source_names)
            .map_err(|e| Error::Parquet { path: self.dir.clone(), source: e.into() })?;
        match dest {
            Dest::Group { ends_group } => {
                if share.groups.is_none() {
                    share.groups = Some(DomainWriter::create(&groups_path(&self.dir, domain), &self.schema)?);
                }
                share.groups.as_mut().expect("just opened").add(batch, ends_group)
            }
            Dest::Edge => {
                if share.edges.is_none() {
                    let path = edges_path(&self.dir, domain);
                    // Read once by the merge: not worth compressing.
                    let writer = ArrowWriter::try_new(AtomicFile::create(&path)?, self.schema.clone(), None)
                        .map_err(|source| Error::Parquet { path: path.clone(), source })?;
                    share.edges = Some((writer, path));
                }
                let (writer, path) = share.edges.as_mut().expect("just opened");
                writer.write(&batch).map_err(|source| Error::Parquet { path: path.clone(), source })
            }
        }
    }

    /// Commits every file; fails when a slice got fewer documents than planned.
    pub fn finish(self) -> Result<()> {
        for (domain, share) in self.shares {
            if let Some(&(rows, _)) = share.runs.front() {
                return Err(Error::Corrupt {
                    path: self.dir.clone(),
                    reason: format!(
                        "fewer kept documents of domain {domain} than the reduce planned ({} more rows expected); \
                         rerun the reduce",
                        rows - share.pending.len() + share.runs.iter().skip(1).map(|r| r.0).sum::<usize>()
                    ),
                });
            }
            if let Some(groups) = share.groups {
                groups.finish()?;
            }
            if let Some((writer, path)) = share.edges {
                let file = writer.into_inner().map_err(|source| Error::Parquet { path: path.clone(), source })?;
                file.commit()?;
            }
        }
        Ok(())
    }
}

fn groups_path(dir: &Path, domain: &str) -> PathBuf {
    dir.join(format!("{domain}.groups.parquet"))
}

fn edges_path(dir: &Path, domain: &str) -> PathBuf {
    dir.join(format!("{domain}.edges.parquet"))
}

/// One task's encoded row groups of a domain, appended one after another.
struct TaskGroups {
    file: File,
    metadata: ParquetMetaData,
    next: usize,
    path: PathBuf,
}

impl TaskGroups {
    fn open(path: PathBuf) -> Result<Option<TaskGroups>> {
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(cause) => return Err(Error::Io { path, cause }),
        };
        // Everything the footer holds is copied, the page encoding statistics too (read as a
        // mask by default).
        let options = ParquetMetaDataOptions::new().with_encoding_stats_as_mask(false);
        let metadata = ParquetMetaDataReader::new()
            .with_metadata_options(Some(options))
            .with_page_index_policy(PageIndexPolicy::Optional)
            .parse_and_finish(&file)
            .map_err(|source| Error::Parquet { path: path.clone(), source })?;
        Ok(Some(TaskGroups { file, metadata, next: 0, path }))
    }

    /// Appends the next row group, which must hold `rows` rows, as it is.
    fn append_next(&mut self, to: &mut DomainWriter, rows: u64) -> Result<()> {
        let corrupt = |reason: String| Error::Corrupt {
            path: self.path.clone(),
            reason: format!("{reason}; remove kept-parts/ and rerun the finish tasks"),
        };
        let k = self.next;
        let group = self.metadata.row_groups().get(k).ok_or_else(|| corrupt(format!("no row group {k}")))?;
        if group.num_rows() as u64 != rows {
            return Err(corrupt(format!("row group {k} holds {} rows where the plan has {rows}", group.num_rows())));
        }
        self.next += 1;
        // Earlier pieces are appended first: the row groups stay in order.
        to.encode_full()?;
        let index = self.metadata.page_index_for_row_group(k);
        let parquet_error = |source| Error::Parquet { path: to.path.clone(), source };
        let mut out = to.file.next_row_group().map_err(parquet_error)?;
        for (c, column) in group.columns().iter().enumerate() {
            let close = ColumnCloseResult {
                bytes_written: column.compressed_size() as u64,
                rows_written: rows,
                metadata: column.clone(),
                bloom_filter: None,
                column_index: index.column_index(c).cloned(),
                offset_index: index.offset_index(c).cloned(),
            };
            out.append_column(&self.file, close).map_err(parquet_error)?;
        }
        out.close().map_err(parquet_error)?;
        Ok(())
    }
}

/// The edge rows of one domain, every task's in task order.
struct EdgeRows {
    /// The kept file they are for, named in errors.
    out: PathBuf,
    files: VecDeque<PathBuf>,
    reader: Option<(ParquetRecordBatchReader, PathBuf)>,
    held: Option<RecordBatch>,
}

impl EdgeRows {
    /// The next `n` rows as one batch.
    fn take(&mut self, n: usize, schema: &SchemaRef) -> Result<RecordBatch> {
        let mut parts = Vec::new();
        let mut need = n;
        while need > 0 {
            let batch = match self.held.take() {
                Some(batch) => batch,
                None => match self.next_batch()? {
                    Some(batch) => batch,
                    None => {
                        return Err(Error::Corrupt {
                            path: self.out.clone(),
                            reason: format!(
                                "the tasks' edge rows end {need} rows early; remove kept-parts/ and rerun the finish tasks"
                            ),
                        });
                    }
                },
            };
            if batch.num_rows() <= need {
                need -= batch.num_rows();
                parts.push(batch);
            } else {
                parts.push(batch.slice(0, need));
                self.held = Some(batch.slice(need, batch.num_rows() - need));
                need = 0;
            }
        }
        arrow_select::concat::concat_batches(schema, &parts)
            .map_err(|e| Error::Parquet { path: self.out.clone(), source: e.into() })
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            if let Some((reader, path)) = &mut self.reader {
                match reader.next() {
                    Some(batch) => {
                        return batch.map(Some).map_err(|e| Error::Parquet { path: path.clone(), source: e.into() });
                    }
                    None => self.reader = None,
                }
            }
            let Some(path) = self.files.pop_front() else { return Ok(None) };
            let parquet_error = |source| Error::Parquet { path: path.clone(), source };
            let file = File::open(&path).map_err(|source| Error::Io { path: path.clone(), cause: source })?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .and_then(|b| b.with_batch_size(1024).build())
                .map_err(parquet_error)?;
            self.reader = Some((reader, path));
        }
    }

    fn left(&mut self) -> Result<bool> {
        Ok(self.held.as_ref().is_some_and(|b| b.num_rows() > 0) || self.next_batch()?.is_some())
    }
}

/// Merges the tasks' shares (task `i` wrote into `task_dirs[i]`) of `domain` into
/// `out` (its `kept/<domain>.parquet`).
pub fn merge(out: &Path, domain: &str, slices: &Slices, task_dirs: &[PathBuf]) -> Result<PathBuf> {
    let schema: SchemaRef = Arc::new(schema());
    let mut writer = DomainWriter::create(out, &schema)?;
    let mut tasks: Vec<Option<TaskGroups>> =
        task_dirs.iter().map(|d| TaskGroups::open(groups_path(d, domain))).collect::<Result<_>>()?;
    let mut edges = EdgeRows {
        out: out.to_path_buf(),
        files: task_dirs.iter().map(|d| edges_path(d, domain)).filter(|p| p.is_file()).collect(),
        reader: None,
        held: None,
    };
    for (rows, pieces) in groups(&slices.pieces) {
        match slices.owner(&rows) {
            Some(task) => {
                let groups = tasks[task].as_mut().ok_or_else(|| Error::Corrupt {
                    path: groups_path(&task_dirs[task], domain),
                    reason: "missing: remove its folder and rerun this finish task".into(),
                })?;
                groups.append_next(&mut writer, rows.end - rows.start)?;
            }
            None => {
                for piece in &slices.pieces[pieces] {
                    let batch = edges.take(piece.rows as usize, &schema)?;
                    writer.add(batch, piece.ends_group)?;
                }
            }
        }
    }
    for groups in tasks.iter().flatten() {
        if groups.next != groups.metadata.num_row_groups() {
            return Err(Error::Corrupt {
                path: groups.path.clone(),
                reason: "more row groups than the plan has; remove kept-parts/ and rerun the finish tasks".into(),
            });
        }
    }
    if edges.left()? {
        return Err(Error::Corrupt {
            path: out.to_path_buf(),
            reason: "the tasks' edge rows are more than the plan has; remove kept-parts/ and rerun the finish tasks"
                .into(),
        });
    }
    writer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kept::tests::{documents, temp_path as temp_dir};
    use crate::kept::{KeptWriter, layout};

    /// `docs` written by one writer, and by tasks holding the slices that start at `cuts`
    /// then merged: the same bytes.
    fn assert_merge_equals_one_writer(docs: &[Document], cuts: &[usize]) {
        let root = temp_dir("merge");
        let mut one = KeptWriter::new(&root.join("one"), vec!["src".into()]).unwrap();
        for doc in docs {
            one.push("web", doc.clone()).unwrap();
        }
        one.finish().unwrap();
        let bounds: Vec<usize> = [&[0], cuts, &[docs.len()]].concat();
        let slices = Slices {
            pieces: layout(docs.iter().map(|d| d.text.len())),
            slices: bounds.windows(2).map(|w| (w[0] as u64, (w[1] - w[0]) as u64)).collect(),
        };
        let domains = BTreeMap::from([("web".to_string(), slices.clone())]);
        let task_dirs: Vec<PathBuf> = (0..bounds.len() - 1).map(|t| root.join(format!("task{t}"))).collect();
        for (task, dir) in task_dirs.iter().enumerate() {
            let mut writer = SliceWriter::new(dir, vec!["src".into()], &domains, task).unwrap();
            for doc in &docs[bounds[task]..bounds[task + 1]] {
                writer.push("web", doc.clone()).unwrap();
            }
            writer.finish().unwrap();
        }
        let merged = root.join("web.parquet");
        merge(&merged, "web", &slices, &task_dirs).unwrap();
        let same = std::fs::read(root.join("one/web.parquet")).unwrap() == std::fs::read(&merged).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        assert!(same, "tasks split at {cuts:?}: the merged file differs from one writer's");
    }

    #[test]
    fn merged_slices_are_one_writers_bytes() {
        // Three row groups of short documents: slices inside a group, on a group's edge, a
        // task with no rows, a task holding whole groups and shared ones.
        let docs = documents(&(0..20_000).map(|row| row % 485).collect::<Vec<_>>());
        for cuts in [vec![], vec![5000], vec![8192], vec![100, 100, 9000, 16_384, 19_999], vec![8191, 8193]] {
            assert_merge_equals_one_writer(&docs, &cuts);
        }
        // 1 MiB documents end batches and row groups by bytes.
        let lengths: Vec<usize> = [vec![10; 100], vec![1 << 20; 70], vec![10; 9_000]].concat();
        let docs = documents(&lengths);
        for cuts in [vec![120], vec![100, 132, 164, 170, 5000]] {
            assert_merge_equals_one_writer(&docs, &cuts);
        }
    }

    #[test]
    fn a_task_with_other_documents_than_planned_is_refused() {
        let docs = documents(&[100; 10]);
        let slices = Slices { pieces: layout(docs.iter().map(|d| d.text.len())), slices: vec![(0, 4), (4, 6)] };
        let domains = BTreeMap::from([("web".to_string(), slices)]);
        let dir = temp_dir("refused");
        let mut writer = SliceWriter::new(&dir, vec!["src".into()], &domains, 0).unwrap();
        for doc in &docs[..3] {
            writer.push("web", doc.clone()).unwrap();
        }
        let err = writer.finish().unwrap_err().to_string();
        assert!(err.contains("fewer kept documents of domain web"), "{err}");
        let mut writer = SliceWriter::new(&dir, vec!["src".into()], &domains, 0).unwrap();
        for doc in &docs[..4] {
            writer.push("web", doc.clone()).unwrap();
        }
        let err = writer.push("web", docs[4].clone()).unwrap_err().to_string();
        assert!(err.contains("more kept documents than the reduce planned"), "{err}");
        let err = writer.push("code", docs[4].clone()).unwrap_err().to_string();
        assert!(err.contains("the reduce kept none of this domain"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Full-text search over the kept corpus (tantivy): to inspect contamination hits, duplicate
//! clusters and what a domain really contains.

use std::collections::BTreeMap;
use std::path::Path;

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, ConstScoreQuery, Occur, Query, QueryParser, TermQuery};
use tantivy::schema::{FAST, INDEXED, IndexRecordOption, STORED, STRING, Schema, TEXT, Value};
use tantivy::snippet::SnippetGenerator;
use tantivy::{Index, IndexWriter, TantivyDocument, Term, doc};

use crate::error::{Error, IoContext, Result};
use crate::pipeline::{Progress, Unit};

/// One search result.
#[derive(Debug, Clone, Serialize)]
pub struct SearchHit {
    /// Document id (raw value; `file:row` in `doc`).
    pub doc_id: u64,
    /// Document id as `file:row`.
    pub doc: String,
    /// The record's own id.
    pub source_id: Option<String>,
    /// Domain.
    pub domain: String,
    /// BM25 score.
    pub score: f32,
    /// Words in the document.
    pub words: Option<u64>,
    /// Excerpt around the matches.
    pub snippet: String,
}

fn search_err(path: &Path) -> impl Fn(tantivy::TantivyError) -> Error + '_ {
    move |source| Error::Search { path: path.to_path_buf(), source }
}

/// Builds an index of `run/kept/*.parquet` (with `words` from `run/profile.parquet` when
/// present) into `out`, replacing an index there (and refusing to replace anything else). The
/// index is built beside `out` and swapped in whole. Returns the number of documents indexed.
pub fn build_index(run: &Path, out: &Path, progress: &dyn Progress) -> Result<u64> {
    crate::atomic::check_replaceable(out, "search index (no meta.json)", |d| d.join("meta.json").is_file())?;
    let building = crate::atomic::AtomicDir::create(out)?;
    let n = build_index_in(run, building.path(), progress)?;
    building.commit()?;
    Ok(n)
}

fn build_index_in(run: &Path, out: &Path, progress: &dyn Progress) -> Result<u64> {
    let err = search_err(out);
    let mut schema = Schema::builder();
    let f_id = schema.add_u64_field("doc_id", INDEXED | STORED | FAST);
    let f_source_id = schema.add_text_field("source_id", STRING | STORED);
    let f_domain = schema.add_text_field("domain", STRING | STORED);
    let f_words = schema.add_u64_field("words", STORED | FAST);
    let f_text = schema.add_text_field("text", TEXT | STORED);
    let index = Index::create_in_dir(out, schema.build()).map_err(&err)?;
    let words = profile_words(&run.join("profile.parquet"))?;
    let mut writer: IndexWriter =
        index.writer_with_num_threads(rayon::current_num_threads().clamp(1, 4), 128 << 20).map_err(&err)?;
    let kept_dir = run.join("kept");
    let mut files: Vec<_> = std::fs::read_dir(&kept_dir)
        .at(&kept_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::Corrupt {
            path: kept_dir,
            reason: "no kept documents to index (run `mixforge corpus run` first)".into(),
        });
    }
    let mut n = 0u64;
    progress.begin("index", files.len() as u64, Unit::Docs);
    for (i, path) in files.iter().enumerate() {
        crate::kept::read(path, 1024, |batch| {
            for (row, id) in batch.ids.iter().enumerate() {
                let mut document =
                    doc!(f_id => *id, f_domain => batch.domains[row].as_str(), f_text => batch.texts[row].as_str());
                if let Some(source_id) = &batch.source_ids[row] {
                    document.add_text(f_source_id, source_id);
                }
                if let Some(&w) = words.get(id) {
                    document.add_u64(f_words, w);
                }
                writer.add_document(document).map_err(&err)?;
                n += 1;
            }
            Ok(())
        })?;
        progress.set(i as u64 + 1);
    }
    writer.commit().map_err(&err)?;
    writer.wait_merging_threads().map_err(&err)?;
    progress.end();
    Ok(n)
}

fn profile_words(path: &Path) -> Result<BTreeMap<u64, u64>> {
    let mut words = BTreeMap::new();
    let Ok(file) = std::fs::File::open(path) else { return Ok(words) };
    let parquet_err = |source| Error::Parquet { path: path.to_path_buf(), source };
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err)?.build().map_err(parquet_err)?;
    for batch in reader {
        let batch = batch.map_err(|e| parquet_err(e.into()))?;
        let (Some(ids), Some(counts)) = (batch.column_by_name("doc_id"), batch.column_by_name("words")) else { break };
        let (Some(ids), Some(counts)) = (ids.as_primitive_opt::<UInt64Type>(), counts.as_primitive_opt::<UInt64Type>())
        else {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                reason: "`doc_id` and `words` must be UInt64 columns".into(),
            });
        };
        for row in 0..batch.num_rows() {
            if counts.is_valid(row) {
                words.insert(ids.value(row), counts.value(row));
            }
        }
    }
    Ok(words)
}

/// Searches an index built by [`build_index`]; `domain` restricts to one domain.
pub fn search(index_dir: &Path, query: &str, domain: Option<&str>, limit: usize) -> Result<Vec<SearchHit>> {
    let err = search_err(index_dir);
    let index = Index::open_in_dir(index_dir).map_err(&err)?;
    let schema = index.schema();
    let field = |name: &str| schema.get_field(name).map_err(&err);
    let (f_id, f_source_id, f_domain, f_words, f_text) =
        (field("doc_id")?, field("source_id")?, field("domain")?, field("words")?, field("text")?);
    let searcher = index.reader().map_err(&err)?.searcher();
    let parser = QueryParser::for_index(&index, vec![f_text]);
    // Lenient parsing: a user's phrase with stray quotes or colons still searches.
    let (user_query, _) = parser.parse_query_lenient(query);
    let query: Box<dyn Query> = match domain {
        Some(d) => {
            let filter = TermQuery::new(Term::from_field_text(f_domain, d), IndexRecordOption::Basic);
            Box::new(BooleanQuery::new(vec![
                (Occur::Must, user_query),
                (Occur::Must, Box::new(ConstScoreQuery::new(Box::new(filter), 0.0))),
            ]))
        }
        None => user_query,
    };
    let top = searcher.search(&*query, &TopDocs::with_limit(limit.max(1)).order_by_score()).map_err(&err)?;
    let mut snippets = SnippetGenerator::create(&searcher, &*query, f_text).map_err(&err)?;
    snippets.set_max_num_chars(200);
    let mut hits = Vec::with_capacity(top.len());
    for (score, address) in top {
        let document: TantivyDocument = searcher.doc(address).map_err(&err)?;
        let doc_id = document.get_first(f_id).and_then(|v| v.as_u64()).unwrap_or_default();
        let snippet = snippets.snippet_from_doc(&document);
        let fragment = if snippet.fragment().is_empty() {
            document.get_first(f_text).and_then(|v| v.as_str()).unwrap_or("").chars().take(200).collect()
        } else {
            snippet.fragment().to_string()
        };
        hits.push(SearchHit {
            doc_id,
            doc: crate::ids::DocId::from_raw(doc_id).to_string(),
            source_id: document.get_first(f_source_id).and_then(|v| v.as_str()).map(String::from),
            domain: document.get_first(f_domain).and_then(|v| v.as_str()).unwrap_or("").to_string(),
            score,
            words: document.get_first(f_words).and_then(|v| v.as_u64()),
            snippet: fragment.split_whitespace().collect::<Vec<_>>().join(" "),
        });
    }
    Ok(hits)
}

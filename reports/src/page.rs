//! The report's content as typed blocks, and its two renderings: one self-contained HTML page
//! (inline SVG, embedded font, no script, no network) and Markdown beside it.

use std::fmt::Write;

use crate::plot::{FONT, FONT_FAMILY};

/// A file written beside the report, holding the numbers a figure or table shows.
#[derive(Debug, Clone, PartialEq)]
pub struct DataFile {
    /// File name under `report/data/`, e.g. `train-loss.csv`.
    pub name: String,
    /// Its contents (CSV or JSON).
    pub contents: String,
}

/// A plot and its data.
#[derive(Debug, Clone)]
pub struct Figure {
    /// Anchor id, unique in the report; also the SVG's file name under `report/figures/`.
    pub id: String,
    /// What the reader sees and should notice.
    pub caption: String,
    /// The `<svg>` markup.
    pub svg: String,
    /// The plotted numbers.
    pub data: DataFile,
}

/// A table; `data` when its numbers are also written as a file.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub caption: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub data: Option<DataFile>,
}

/// One piece of a section.
#[derive(Debug, Clone)]
pub enum Block {
    /// A paragraph of plain text.
    Text(String),
    /// A table.
    Table(Table),
    /// A plot.
    Figure(Figure),
    /// Preformatted text (a recipe, a document excerpt).
    Code { caption: String, text: String },
}

/// A titled part of the report.
#[derive(Debug, Clone)]
pub struct Section {
    pub id: String,
    pub title: String,
    pub blocks: Vec<Block>,
}

impl Section {
    /// An empty section.
    pub fn new(id: &str, title: &str) -> Section {
        Section { id: id.to_string(), title: title.to_string(), blocks: Vec::new() }
    }

    /// Adds a paragraph.
    pub fn text(&mut self, text: impl Into<String>) {
        self.blocks.push(Block::Text(text.into()));
    }
}

/// The whole report.
#[derive(Debug, Clone)]
pub struct Report {
    pub title: String,
    pub sections: Vec<Section>,
}

impl Report {
    /// Every data file of the report's figures and tables, in page order.
    pub fn data_files(&self) -> Vec<&DataFile> {
        self.blocks()
            .filter_map(|b| match b {
                Block::Figure(f) => Some(&f.data),
                Block::Table(t) => t.data.as_ref(),
                _ => None,
            })
            .collect()
    }

    /// Every figure, in page order.
    pub fn figures(&self) -> Vec<&Figure> {
        self.blocks().filter_map(|b| if let Block::Figure(f) = b { Some(f) } else { None }).collect()
    }

    fn blocks(&self) -> impl Iterator<Item = &Block> {
        self.sections.iter().flat_map(|s| &s.blocks)
    }
}

/// Escapes text for HTML.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
body { font-family: FAMILY, sans-serif; margin: 0; color: #1d2327; background: #f6f7f8; line-height: 1.45; }
nav { position: sticky; top: 0; background: #1d2327; padding: 8px 24px; z-index: 1; }
nav a { color: #e8eaec; margin-right: 18px; text-decoration: none; font-size: 14px; }
main { max-width: 1000px; margin: 0 auto; padding: 8px 24px 48px; }
section { background: #fff; border: 1px solid #dde1e4; border-radius: 6px; padding: 4px 22px 18px; margin: 18px 0; }
h1 { font-size: 24px; margin: 22px 0 4px; } h2 { font-size: 19px; border-bottom: 1px solid #e3e6e8; padding-bottom: 4px; }
table { border-collapse: collapse; margin: 10px 0 4px; font-size: 13px; }
th, td { border-bottom: 1px solid #e3e6e8; padding: 3px 10px; text-align: right; vertical-align: top; }
th { background: #f0f2f4; } td:first-child, th:first-child { text-align: left; }
td.text { text-align: left; max-width: 560px; white-space: pre-wrap; word-break: break-word; }
caption { caption-side: top; text-align: left; font-weight: bold; padding: 4px 0; font-size: 13px; }
figure { margin: 16px 0; } figure svg { max-width: 100%; height: auto; display: block; }
figcaption { font-size: 13px; color: #3c4348; } .data { font-size: 12px; }
pre { background: #f3f4f6; padding: 10px; overflow-x: auto; font-size: 12px; max-height: 420px; }
p { font-size: 14px; }
"#;

/// The self-contained HTML page. Figures are inline SVG; data files are linked relatively
/// (`data/NAME`), so the page opened from disk finds them beside it.
pub fn html(report: &Report) -> String {
    let font = base64(FONT);
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n\
         <style>\n@font-face {{ font-family: {FONT_FAMILY}; src: url(data:font/ttf;base64,{font}) format(\"truetype\"); }}\n{}</style>\n</head>\n<body>\n<nav>",
        esc(&report.title),
        STYLE.replace("FAMILY", FONT_FAMILY)
    );
    for s in &report.sections {
        let _ = write!(out, "<a href=\"#{}\">{}</a>", esc(&s.id), esc(&s.title));
    }
    let _ = write!(out, "</nav>\n<main>\n<h1>{}</h1>\n", esc(&report.title));
    for s in &report.sections {
        let _ = writeln!(out, "<section id=\"{}\">\n<h2>{}</h2>", esc(&s.id), esc(&s.title));
        for b in &s.blocks {
            match b {
                Block::Text(t) => {
                    let _ = writeln!(out, "<p>{}</p>", esc(t));
                }
                Block::Code { caption, text } => {
                    let _ = writeln!(out, "<p><b>{}</b></p>\n<pre>{}</pre>", esc(caption), esc(text));
                }
                Block::Table(t) => html_table(&mut out, t),
                Block::Figure(f) => {
                    let _ = writeln!(
                        out,
                        "<figure id=\"{}\">\n{}\n<figcaption>{} <a class=\"data\" href=\"data/{}\">data: {}</a></figcaption>\n</figure>",
                        esc(&f.id),
                        strip_xml_declaration(&f.svg),
                        esc(&f.caption),
                        esc(&f.data.name),
                        esc(&f.data.name)
                    );
                }
            }
        }
        out.push_str("</section>\n");
    }
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

fn html_table(out: &mut String, t: &Table) {
    out.push_str("<table>");
    if !t.caption.is_empty() || t.data.is_some() {
        let link = t.data.as_ref().map_or(String::new(), |d| {
            format!(" <a class=\"data\" href=\"data/{}\">data: {}</a>", esc(&d.name), esc(&d.name))
        });
        let _ = write!(out, "<caption>{}{link}</caption>", esc(&t.caption));
    }
    out.push_str("<thead><tr>");
    for h in &t.header {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>\n");
    for row in &t.rows {
        out.push_str("<tr>");
        for cell in row {
            // Long cells are prose (document excerpts): left-aligned and wrapped.
            let class = if cell.len() > 40 { " class=\"text\"" } else { "" };
            let _ = write!(out, "<td{class}>{}</td>", esc(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
}

fn strip_xml_declaration(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    }
}

/// The Markdown rendering: the same sections and tables; figures as links to their SVG file
/// (`figures/ID.svg`) and data file.
pub fn markdown(report: &Report) -> String {
    let mut out = format!("# {}\n", report.title);
    for s in &report.sections {
        let _ = write!(out, "\n## {}\n", s.title);
        for b in &s.blocks {
            match b {
                Block::Text(t) => {
                    let _ = write!(out, "\n{t}\n");
                }
                Block::Code { caption, text } => {
                    let _ = write!(out, "\n**{caption}**\n\n```\n{}\n```\n", text.trim_end());
                }
                Block::Table(t) => md_table(&mut out, t),
                Block::Figure(f) => {
                    let _ = write!(
                        out,
                        "\n![{}](figures/{}.svg)\n\n*{}* (data: [{}](data/{}))\n",
                        f.id, f.id, f.caption, f.data.name, f.data.name
                    );
                }
            }
        }
    }
    out
}

fn md_cell(cell: &str) -> String {
    let one_line = cell.replace('\n', " ⏎ ").replace('|', "\\|");
    if one_line.chars().count() > 160 {
        let cut: String = one_line.chars().take(157).collect();
        format!("{cut}…")
    } else {
        one_line
    }
}

fn md_table(out: &mut String, t: &Table) {
    out.push('\n');
    if !t.caption.is_empty() {
        let _ = write!(out, "**{}**", t.caption);
        if let Some(d) = &t.data {
            let _ = write!(out, " (data: [{}](data/{}))", d.name, d.name);
        }
        out.push_str("\n\n");
    }
    let _ = writeln!(out, "| {} |", t.header.iter().map(|h| md_cell(h)).collect::<Vec<_>>().join(" | "));
    let _ = writeln!(out, "|{}|", t.header.iter().map(|_| "---").collect::<Vec<_>>().join("|"));
    for row in &t.rows {
        let _ = writeln!(out, "| {} |", row.iter().map(|c| md_cell(c)).collect::<Vec<_>>().join(" | "));
    }
}

/// Standard base64 (RFC 4648, padded): the font as a `data:` URL.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let cases =
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE=")];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn html_escapes_and_links_data() {
        let mut s = Section::new("x", "X <1>");
        s.blocks.push(Block::Table(Table {
            caption: "t".into(),
            header: vec!["a".into()],
            rows: vec![vec!["<b>".into()]],
            data: Some(DataFile { name: "t.csv".into(), contents: "a\n".into() }),
        }));
        let page = html(&Report { title: "r".into(), sections: vec![s] });
        assert!(page.contains("X &lt;1&gt;") && page.contains("&lt;b&gt;") && page.contains("href=\"data/t.csv\""));
        assert!(!page.contains("http://") && !page.contains("https://"), "the page must not reach the network");
    }
}

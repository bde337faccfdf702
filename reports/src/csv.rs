//! CSV text for data files: RFC 4180 quoting; floats in Rust's shortest round-trip form, so a
//! value read back equals the artifact's bit for bit.

/// Builds one CSV file.
pub struct Csv {
    text: String,
}

/// A CSV field.
pub enum Cell<'a> {
    S(&'a str),
    F(f64),
    U(u64),
    /// A missing value (empty field).
    None,
}

impl Csv {
    /// A file with this header row.
    pub fn new(header: &[&str]) -> Csv {
        let mut csv = Csv { text: String::new() };
        csv.row(&header.iter().map(|h| Cell::S(h)).collect::<Vec<_>>());
        csv
    }

    /// Appends a row.
    pub fn row(&mut self, cells: &[Cell]) {
        let fields: Vec<String> = cells
            .iter()
            .map(|c| match c {
                Cell::S(s) if s.contains([',', '"', '\n', '\r']) => format!("\"{}\"", s.replace('"', "\"\"")),
                Cell::S(s) => s.to_string(),
                Cell::F(v) if v.is_finite() => format!("{v}"),
                Cell::F(_) | Cell::None => String::new(),
                Cell::U(v) => v.to_string(),
            })
            .collect();
        self.text.push_str(&fields.join(","));
        self.text.push('\n');
    }

    /// The file's text.
    pub fn finish(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_round_trips() {
        let mut csv = Csv::new(&["a", "b"]);
        csv.row(&[Cell::S("x,\"y\""), Cell::F(0.1 + 0.2)]);
        let text = csv.finish();
        assert_eq!(text, "a,b\n\"x,\"\"y\"\"\",0.30000000000000004\n");
        assert_eq!(text.lines().nth(1).unwrap().rsplit(',').next().unwrap().parse::<f64>().unwrap(), 0.1 + 0.2);
    }
}

//! The bench's output: markdown tables, each with a title and notes.

use std::fmt::Write as _;

pub struct Table {
    title: String,
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

impl Table {
    pub fn new(title: &str, headers: &[&str]) -> Table {
        Table {
            title: title.into(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: vec![],
            notes: vec![],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len(), "a row of {}", self.title);
        self.rows.push(cells);
    }

    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    pub fn markdown(&self) -> String {
        let mut out = format!("### {}\n\n", self.title);
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        out.push_str(&line(&self.headers));
        out.push_str(&line(&vec!["---".to_string(); self.headers.len()]));
        for r in &self.rows {
            out.push_str(&line(r));
        }
        for n in &self.notes {
            let _ = write!(out, "\n{n}\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_markdown() {
        let mut t = super::Table::new("T", &["a", "b"]);
        t.row(vec!["1".into(), "2".into()]);
        t.note("n");
        assert_eq!(t.markdown(), "### T\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n\nn\n");
    }
}

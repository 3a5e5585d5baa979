//! Human tables for the CLI: left-aligned columns, two spaces apart.

/// Renders `rows` under `header`, each column as wide as its widest cell.
pub(crate) fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let text: Vec<String> = cells
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn aligns_columns() {
        let out = super::render(
            &["ID", "ZONE"],
            &[
                vec!["i1".into(), "eu1".into()],
                vec!["long-id".into(), "x".into()],
            ],
        );
        assert_eq!(out, "ID       ZONE\ni1       eu1\nlong-id  x\n");
    }
}

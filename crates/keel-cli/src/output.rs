//! Text tables and JSON documents on stdout.

use std::io::Write;

use crate::error::CliError;
use crate::Format;

/// Columns left-aligned, two spaces apart, no trailing blanks.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            if i + 1 < cells.len() {
                text.push_str(&" ".repeat(widths[i].saturating_sub(cell.chars().count())));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// Prints `text` or the pretty JSON document, whichever was asked for.
pub fn emit(format: Format, text: &str, json: &serde_json::Value) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    let result = match format {
        Format::Text => stdout.write_all(text.as_bytes()),
        Format::Json => serde_json::to_writer_pretty(&mut stdout, json)
            .map_err(std::io::Error::from)
            .and_then(|_| stdout.write_all(b"\n")),
    };
    match result.and_then(|_| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(error) => Err(CliError::other(format!("cannot write to stdout: {error}"))),
    }
}

/// Node ids as `1,2,3`.
pub fn ids(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_align() {
        let text = super::table(&["A", "LONG"], &[vec!["xyz".into(), "1".into()], vec!["b".into(), "".into()]]);
        assert_eq!(text, "A    LONG\nxyz  1\nb\n");
    }
}

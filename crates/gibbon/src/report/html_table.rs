//! Tables of the HTML report: numeric columns right-aligned in a tabular font.
use super::html::{escape, SummaryTable};
use std::fmt::Write as _;

fn looks_numeric(cell: &str) -> bool {
    let cell = cell.trim();
    let cell = cell.strip_suffix('%').unwrap_or(cell).trim_end();
    !cell.is_empty() && cell.parse::<f64>().is_ok()
}

/// Placeholders that may stand in a numeric column without making it text.
fn is_placeholder(cell: &str) -> bool {
    matches!(cell.trim(), "" | "-" | "–" | "—" | "n/a" | "N/A" | "NaN")
}

/// Whether column `i` holds numbers: at least one numeric cell and nothing but numbers and
/// placeholders.
fn numeric_column(table: &SummaryTable, i: usize) -> bool {
    let cells = || table.rows.iter().filter_map(|row| row.get(i));
    cells().any(|c| looks_numeric(c)) && cells().all(|c| looks_numeric(c) || is_placeholder(c))
}

pub(super) fn render_table_body(out: &mut String, table: &SummaryTable) {
    if table.columns.is_empty() && table.rows.is_empty() {
        out.push_str("<p class=\"empty\">No data.</p>\n");
        return;
    }
    let width = table.rows.iter().map(Vec::len).fold(table.columns.len(), usize::max);
    let numeric: Vec<bool> = (0..width).map(|i| numeric_column(table, i)).collect();
    let class = |i: usize| {
        if numeric.get(i).copied().unwrap_or(false) {
            " class=\"num\""
        } else {
            ""
        }
    };
    out.push_str("<div class=\"table-wrap\"><table>\n");
    if !table.columns.is_empty() {
        out.push_str("<thead><tr>");
        for (i, column) in table.columns.iter().enumerate() {
            let _ = write!(out, "<th{}>{}</th>", class(i), escape(column));
        }
        out.push_str("</tr></thead>\n");
    }
    out.push_str("<tbody>\n");
    for row in &table.rows {
        out.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            let _ = write!(out, "<td{}>{}</td>", class(i), escape(cell));
        }
        for _ in row.len()..table.columns.len() {
            out.push_str("<td></td>");
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table></div>\n");
}

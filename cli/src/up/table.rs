//! The status table `up` prints.

use std::fmt::Write;

/// One row: a service and its state.
#[derive(Debug, Clone)]
pub struct Row {
    pub service: String,
    pub address: String,
    pub ready: bool,
    pub restarts: u32,
}

/// Renders rows as an aligned text table.
pub fn render(rows: &[Row]) -> String {
    let headers = ["SERVICE", "ADDRESS", "READY", "RESTARTS"];
    let cells: Vec<[String; 4]> = rows
        .iter()
        .map(|r| {
            [
                r.service.clone(),
                r.address.clone(),
                if r.ready { "yes" } else { "no" }.to_string(),
                r.restarts.to_string(),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cols: [&str; 4]| {
        let mut text = String::new();
        for (i, (col, w)) in cols.iter().zip(widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            let _ = write!(text, "{col:<w$}");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut out, headers);
    for row in &cells {
        line(&mut out, [&row[0], &row[1], &row[2], &row[3]]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let text = render(&[
            Row {
                service: "event-bus".into(),
                address: "http://127.0.0.1:4005".into(),
                ready: true,
                restarts: 0,
            },
            Row {
                service: "posts".into(),
                address: "http://127.0.0.1:4000".into(),
                ready: false,
                restarts: 2,
            },
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "SERVICE    ADDRESS                READY  RESTARTS"
        );
        assert_eq!(lines[1], "event-bus  http://127.0.0.1:4005  yes    0");
        assert_eq!(lines[2], "posts      http://127.0.0.1:4000  no     2");
    }
}

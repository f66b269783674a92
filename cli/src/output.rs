//! stdout: one JSON document per line for lists and streams; a single
//! answer is pretty-printed on a terminal and one line otherwise.

use std::io::{IsTerminal, Write};

use serde_json::Value;

/// Writes one line to stdout; a closed pipe (`switch … | head`) ends the
/// program quietly.
pub fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    let written = writeln!(out, "{text}").and_then(|_| out.flush());
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("switch: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// One JSON document on one line.
pub fn json_line(v: &Value) {
    line(&v.to_string());
}

/// A single answer: indented on a terminal, one line when piped.
pub fn json(v: &Value) {
    if std::io::stdout().is_terminal() {
        line(&serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()));
    } else {
        json_line(v);
    }
}

/// A plain table with a header row, columns as wide as their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let render = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i + 1 == widths.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_string()
    };
    line(&render(&mut header.iter().copied()));
    for row in rows {
        line(&render(&mut row.iter().map(String::as_str)));
    }
}

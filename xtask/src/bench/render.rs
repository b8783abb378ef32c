//! Human-readable renderings of a bench report: the aligned terminal table and
//! bench/RESULTS.md. Both show, per metric, the medians, the ratio and each side's range.

use std::fmt::Write as _;

use serde_json::Value;

use super::report::{Report, ScenarioResult};
use super::stats::{Summary, fmt_value};

/// The columns of both renderings.
const HEADER: [&str; 7] = [
    "scenario",
    "metric",
    "baseline",
    "subject",
    "ratio",
    "baseline min..max",
    "subject min..max",
];

/// One row per metric, the scenario named on its first row only.
fn rows(scenarios: &[ScenarioResult]) -> Vec<[String; 7]> {
    let mut rows = Vec::new();
    for s in scenarios {
        for (i, m) in s.metrics.iter().enumerate() {
            let range = |sum: &Summary| format!("{}..{}", fmt_value(sum.min), fmt_value(sum.max));
            rows.push([
                if i == 0 {
                    s.name.to_owned()
                } else {
                    String::new()
                },
                format!("{} ({})", m.metric.label, m.metric.unit),
                fmt_value(m.baseline.median),
                fmt_value(m.subject.median),
                m.ratio
                    .map_or_else(|| "n/a".to_owned(), |r| format!("{r:.3}")),
                range(&m.baseline),
                range(&m.subject),
            ]);
        }
    }
    rows
}

/// One line per scenario that had failed operations.
fn error_notes(scenarios: &[ScenarioResult]) -> Vec<String> {
    scenarios
        .iter()
        .filter_map(|s| {
            let (baseline, subject, first) = s.errors();
            (baseline + subject > 0).then(|| {
                format!(
                    "{}: {baseline} failed operation(s) in baseline runs, {subject} in subject runs; first: {}",
                    s.name,
                    first.unwrap_or("unknown")
                )
            })
        })
        .collect()
}

/// The aligned terminal table (numbers right-aligned), plus error notes.
pub(crate) fn table(scenarios: &[ScenarioResult]) -> String {
    let rows = rows(scenarios);
    let mut widths = HEADER.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 7]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            let pad = " ".repeat(w - cell.chars().count());
            if i < 2 {
                let _ = write!(out, "{cell}{pad}  ");
            } else {
                let _ = write!(out, "{pad}{cell}  ");
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(HEADER);
    for row in &rows {
        out.push_str(&line(row.each_ref().map(String::as_str)));
    }
    for note in error_notes(scenarios) {
        out.push_str(&format!("errors: {note}\n"));
    }
    out
}

/// bench/RESULTS.md: the context of the run, the table and how to reproduce it.
pub(crate) fn markdown(report: &Report) -> String {
    let mut out = String::from("# interlock benchmark results\n\n");
    let _ = writeln!(
        out,
        "Written by `cargo xtask bench{}` on {}. What each scenario measures and how to read \
         the ratios: [README.md](README.md). Raw numbers: [results.json](results.json).\n",
        if report.mode == "quick" {
            " --quick"
        } else {
            ""
        },
        report.date
    );
    let m = &report.machine;
    let memory = m
        .memory_mib
        .map_or_else(|| "unknown".to_owned(), |mib| format!("{mib} MiB"));
    let dirty = if report.git.dirty {
        " (with uncommitted changes)"
    } else {
        ""
    };
    out.push_str("| | |\n|---|---|\n");
    let _ = writeln!(out, "| commit | `{}`{dirty} |", report.git.commit);
    let _ = writeln!(out, "| kernel | {} |", m.kernel);
    let _ = writeln!(out, "| CPU | {} ({} usable) |", m.cpu, m.cpus);
    let _ = writeln!(out, "| memory | {memory} |");
    let _ = writeln!(
        out,
        "| runs | {} mode: {} per variant, baseline and subject alternating |",
        report.mode, report.repetitions
    );
    let _ = writeln!(out, "| duration | {:.0} s |\n", report.duration_secs);

    let _ = writeln!(out, "| {} |", HEADER.join(" | "));
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|");
    for row in rows(&report.scenarios) {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    let notes = error_notes(&report.scenarios);
    if !notes.is_empty() {
        out.push_str("\nFailed operations:\n\n");
        for note in notes {
            let _ = writeln!(out, "- {note}");
        }
    }
    out.push_str(
        "\nBaseline and subject are medians over the runs; ratio = subject / baseline. \
         Above 1 the subject is slower for latencies and times, faster for rates.\n\n",
    );
    for s in &report.scenarios {
        let _ = writeln!(
            out,
            "- `{}`: {} ({})",
            s.name,
            s.title,
            params_text(&s.params)
        );
    }
    out.push_str(
        "\n## Reproduce\n\nAs root, from a clone of this repository at the commit above:\n\n\
         ```sh\ncargo xtask bench           # full run\ncargo xtask bench --quick   # shorter run\n```\n",
    );
    out
}

/// A scenario's parameters as `key=value, ...` (strings unquoted).
fn params_text(params: &Value) -> String {
    let Some(map) = params.as_object() else {
        return params.to_string();
    };
    map.iter()
        .map(|(key, value)| match value.as_str() {
            Some(text) => format!("{key}={text}"),
            None => format!("{key}={value}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::bench::report::fixtures::{report, sample};

    #[test]
    fn table_aligns_and_notes_errors() {
        let t = table(&[sample()]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("scenario"));
        assert!(lines[1].starts_with("connect-nontarget  connect+close p50 (µs)"));
        assert!(lines[1].contains("1.300"));
        assert!(
            lines[1].ends_with("9.000..11.00      12.00..14.00"),
            "{}",
            lines[1]
        );
        assert!(lines[2].starts_with(" "), "scenario named once");
        assert!(lines[4].starts_with("errors: connect-nontarget: 0 failed"));
        let widths: Vec<usize> = lines[..4].iter().map(|l| l.chars().count()).collect();
        assert!(widths.iter().all(|w| *w == widths[0]), "{t}");
    }

    #[test]
    fn markdown_has_context_table_and_reproduction() {
        let md = markdown(&report());
        assert!(md.contains("`cargo xtask bench --quick`"));
        assert!(md.contains("| commit | `abc123` (with uncommitted changes) |"));
        assert!(md.contains("| scenario | metric | baseline | subject | ratio |"));
        assert!(
            md.contains("| connect-nontarget | connect+close p50 (µs) | 10.00 | 13.00 | 1.300 |")
        );
        assert!(md.contains("## Reproduce"));
        assert!(md.contains("Failed operations"));
        assert!(md.contains("(connects=100, exchange=false)"), "{md}");
    }

    #[test]
    fn params_render_as_key_value_pairs() {
        assert_eq!(
            params_text(&json!({"program": "/bin/true", "spawns": 5})),
            "program=/bin/true, spawns=5"
        );
        assert_eq!(params_text(&json!(3)), "3");
    }
}

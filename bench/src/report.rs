//! Figures, their targets and verdicts; Markdown and JSON output.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

/// SQLite + the HTTP event bus (the default).
pub const EMBEDDED: &str = "embedded";
/// PostgreSQL + NATS JetStream.
pub const PRODUCTION: &str = "production";
/// Both, in column order.
pub const BACKENDS: [&str; 2] = [EMBEDDED, PRODUCTION];

/// Which way a target goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Op {
    /// The value must be at least the target.
    #[serde(rename = ">=")]
    AtLeast,
    /// The value must be at most the target.
    #[serde(rename = "<=")]
    AtMost,
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub scenario: String,
    /// `embedded` (SQLite + HTTP bus) or `production` (PostgreSQL + NATS JetStream).
    pub backend: String,
    pub metric: String,
    pub value: f64,
    pub unit: String,
    /// The target's number, when the figure has one.
    pub target: Option<f64>,
    pub target_op: Option<Op>,
    /// `true`/`false` when there is a target, `null` for informational figures.
    pub pass: Option<bool>,
    /// "pass (+23%)", "FAIL (2.1x over)", ...
    pub verdict: String,
    /// The original (Node) system's figure, quoted from the issue (reference only).
    pub original: Option<String>,
    pub note: Option<String>,
}

impl Figure {
    pub fn info(scenario: &str, metric: &str, value: f64, unit: &str) -> Figure {
        Figure {
            scenario: scenario.to_string(),
            backend: EMBEDDED.to_string(),
            metric: metric.to_string(),
            value,
            unit: unit.to_string(),
            target: None,
            target_op: None,
            pass: None,
            verdict: String::new(),
            original: None,
            note: None,
        }
    }

    /// A figure that must be at least `target`.
    pub fn at_least(scenario: &str, metric: &str, value: f64, unit: &str, target: f64) -> Figure {
        Figure::info(scenario, metric, value, unit).with_target(Op::AtLeast, target)
    }

    /// A figure that must be at most `target`.
    pub fn at_most(scenario: &str, metric: &str, value: f64, unit: &str, target: f64) -> Figure {
        Figure::info(scenario, metric, value, unit).with_target(Op::AtMost, target)
    }

    fn with_target(mut self, op: Op, target: f64) -> Figure {
        self.target = Some(target);
        self.target_op = Some(op);
        let pass = match op {
            Op::AtLeast => self.value >= target,
            Op::AtMost => self.value <= target,
        };
        self.pass = Some(pass);
        self.verdict = verdict(op, self.value, target, pass);
        self
    }

    /// Which backend the figure was measured on (default: embedded).
    pub fn on(mut self, backend: &str) -> Figure {
        self.backend = backend.to_string();
        self
    }

    pub fn original(mut self, text: &str) -> Figure {
        self.original = Some(text.to_string());
        self
    }

    pub fn note(mut self, text: impl Into<String>) -> Figure {
        self.note = Some(text.into());
        self
    }

    pub fn target_text(&self) -> String {
        match (self.target_op, self.target) {
            (Some(Op::AtLeast), Some(t)) => format!("≥ {}", fmt_value(t, &self.unit)),
            (Some(Op::AtMost), Some(t)) => format!("≤ {}", fmt_value(t, &self.unit)),
            _ => "–".to_string(),
        }
    }
}

fn verdict(op: Op, value: f64, target: f64, pass: bool) -> String {
    let word = if pass { "pass" } else { "FAIL" };
    if target == 0.0 {
        // "≤ 0": the only passing value is zero.
        return if pass {
            word.to_string()
        } else {
            format!("{word} ({} over)", fmt_num(value - target, 0))
        };
    }
    let ratio = value / target;
    let how = match op {
        Op::AtLeast if pass => format!("{:+.0}% above target", (ratio - 1.0) * 100.0),
        Op::AtLeast => format!("{:.0}% below target", (1.0 - ratio) * 100.0),
        Op::AtMost if pass => format!("{:.0}% of the limit", ratio * 100.0),
        Op::AtMost if ratio >= 2.0 => format!("{ratio:.1}× the limit"),
        Op::AtMost => format!("{:.0}% over the limit", (ratio - 1.0) * 100.0),
    };
    format!("{word} ({how})")
}

/// A number with thousands separators and `decimals` decimals.
pub fn fmt_num(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let text = format!("{:.*}", decimals, v.abs());
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i.to_string(), Some(f.to_string())),
        None => (text.clone(), None),
    };
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if v < 0.0 && text.chars().any(|c| c != '0' && c != '.') {
        "-"
    } else {
        ""
    };
    match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

/// A value with its unit, rounded sensibly for the unit.
pub fn fmt_value(v: f64, unit: &str) -> String {
    let decimals = match unit {
        "ms" => {
            if v.abs() < 10.0 {
                2
            } else {
                1
            }
        }
        "s" | "MiB" | "%" => 2,
        "ratio" => 2,
        _ => {
            if v.fract() == 0.0 || v.abs() >= 100.0 {
                0
            } else {
                2
            }
        }
    };
    let n = fmt_num(v, decimals);
    match unit {
        "" | "count" => n,
        "%" => format!("{n}%"),
        u => format!("{n} {u}"),
    }
}

/// One scenario's results.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    pub scenario: String,
    pub title: String,
    pub figures: Vec<Figure>,
    pub notes: Vec<String>,
    pub error: Option<String>,
}

impl Section {
    pub fn new(scenario: &str, title: &str) -> Section {
        Section {
            scenario: scenario.to_string(),
            title: title.to_string(),
            figures: Vec::new(),
            notes: Vec::new(),
            error: None,
        }
    }

    pub fn push(&mut self, f: Figure) {
        self.figures.push(f);
    }

    /// Adds a figure measured on `backend`.
    pub fn push_on(&mut self, backend: &str, f: Figure) {
        self.figures.push(f.on(backend));
    }

    pub fn note(&mut self, n: impl Into<String>) {
        self.notes.push(n.into());
    }

    /// Records that a backend's part of the scenario failed.
    pub fn fail(&mut self, backend: &str, e: &anyhow::Error) {
        let text = format!("{backend}: {e:#}");
        self.error = Some(match self.error.take() {
            Some(prev) => format!("{prev}\n{text}"),
            None => text,
        });
    }

    /// One table, the backends side by side: a row per metric.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "## {}\n", self.title);
        if !self.figures.is_empty() {
            out.push_str(SIDE_BY_SIDE_HEADER);
            for row in rows(self.figures.iter()) {
                out.push_str(&row.markdown(false));
            }
            out.push('\n');
        }
        for n in &self.notes {
            let _ = writeln!(out, "- {n}");
        }
        if let Some(e) = &self.error {
            for line in e.lines() {
                let _ = writeln!(out, "\n**scenario failed:** {line}");
            }
        }
        if !self.notes.is_empty() || self.error.is_some() {
            out.push('\n');
        }
        out
    }
}

const SIDE_BY_SIDE_HEADER: &str = "| metric | embedded<br><sub>SQLite + HTTP bus</sub> | production<br><sub>PostgreSQL + NATS</sub> | target | original (reference) | pass: embedded | pass: production |\n|---|---:|---:|---:|---:|---|---|\n";

/// The figures of one metric, one per backend.
struct Row<'a> {
    scenario: &'a str,
    metric: &'a str,
    by_backend: [Option<&'a Figure>; 2],
}

/// Groups figures by (scenario, metric), in order of first appearance.
fn rows<'a>(figures: impl Iterator<Item = &'a Figure>) -> Vec<Row<'a>> {
    let mut out: Vec<Row<'a>> = Vec::new();
    for f in figures {
        let slot = usize::from(f.backend == PRODUCTION);
        match out
            .iter_mut()
            .find(|r| r.scenario == f.scenario && r.metric == f.metric)
        {
            Some(r) => r.by_backend[slot] = Some(f),
            None => {
                let mut by_backend = [None, None];
                by_backend[slot] = Some(f);
                out.push(Row {
                    scenario: &f.scenario,
                    metric: &f.metric,
                    by_backend,
                });
            }
        }
    }
    out
}

impl Row<'_> {
    fn markdown(&self, with_scenario: bool) -> String {
        let present: Vec<(&str, &Figure)> = BACKENDS
            .iter()
            .zip(self.by_backend.iter())
            .filter_map(|(b, f)| f.map(|f| (*b, f)))
            .collect();
        let notes: Vec<String> = present
            .iter()
            .filter(|_| !with_scenario)
            .filter_map(|(b, f)| {
                f.note.as_deref().map(|n| {
                    if present.len() > 1 {
                        format!("<br><sub>{b}: {n}</sub>")
                    } else {
                        format!("<br><sub>{n}</sub>")
                    }
                })
            })
            .collect();
        let value =
            |f: Option<&Figure>| f.map_or("–".to_string(), |f| fmt_value(f.value, &f.unit));
        let verdict = |f: Option<&Figure>| match f {
            None => "–".to_string(),
            Some(f) if f.verdict.is_empty() => "info".to_string(),
            Some(f) => f.verdict.clone(),
        };
        let targets: Vec<(&str, String)> = present
            .iter()
            .filter(|(_, f)| f.target.is_some())
            .map(|(b, f)| (*b, f.target_text()))
            .collect();
        let target = match targets.as_slice() {
            [] => "–".to_string(),
            [(_, t)] => t.clone(),
            [(_, a), (_, b)] if a == b => a.clone(),
            many => many
                .iter()
                .map(|(b, t)| format!("{b}: {t}"))
                .collect::<Vec<_>>()
                .join("<br>"),
        };
        let original = present
            .iter()
            .find_map(|(_, f)| f.original.clone())
            .unwrap_or_else(|| "–".to_string());
        let name = if with_scenario {
            format!("{}: {}", self.scenario, self.metric)
        } else {
            self.metric.to_string()
        };
        format!(
            "| {name}{} | {} | {} | {target} | {original} | {} | {} |\n",
            notes.concat(),
            value(self.by_backend[0]),
            value(self.by_backend[1]),
            verdict(self.by_backend[0]),
            verdict(self.by_backend[1]),
        )
    }
}

/// Facts about the machine the suite ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub mem_total_mib: u64,
    pub kernel: String,
    pub load_avg_at_start: String,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".to_string());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_total_mib = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb / 1024)
            .unwrap_or(0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let load_avg_at_start = std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default();
        Machine {
            nproc: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cpu_model,
            mem_total_mib,
            kernel,
            load_avg_at_start,
        }
    }
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub suite: String,
    pub mode: String,
    pub started_unix: u64,
    pub duration_s: f64,
    pub machine: Machine,
    /// The backends that ran.
    pub backends: Vec<String>,
    /// Why production did not run, when it did not.
    pub production_skipped: Option<String>,
    pub sections: Vec<Section>,
    /// Every figure of every section, flat (the machine-readable list).
    pub figures: Vec<Figure>,
}

impl Report {
    pub fn new(mode: &str, machine: Machine, started_unix: u64) -> Report {
        Report {
            suite: "switchyard-bench".to_string(),
            mode: mode.to_string(),
            started_unix,
            duration_s: 0.0,
            machine,
            backends: Vec::new(),
            production_skipped: None,
            sections: Vec::new(),
            figures: Vec::new(),
        }
    }

    pub fn add(&mut self, section: Section) {
        self.figures.extend(section.figures.iter().cloned());
        self.sections.push(section);
    }

    pub fn summary_markdown(&self) -> String {
        let mut out = String::from("## Summary\n\n");
        out.push_str(SIDE_BY_SIDE_HEADER);
        for row in rows(self.figures.iter().filter(|f| f.pass.is_some())) {
            out.push_str(&row.markdown(true));
        }
        out.push('\n');
        for backend in BACKENDS {
            let with_target: Vec<&Figure> = self
                .figures
                .iter()
                .filter(|f| f.backend == backend && f.pass.is_some())
                .collect();
            if !self.backends.iter().any(|b| b == backend) {
                let _ = writeln!(
                    out,
                    "**{backend}**: not run{}.\n",
                    self.production_skipped
                        .as_deref()
                        .filter(|_| backend == PRODUCTION)
                        .map(|why| format!(" ({why})"))
                        .unwrap_or_default()
                );
                continue;
            }
            let missed: Vec<&&Figure> = with_target
                .iter()
                .filter(|f| f.pass == Some(false))
                .collect();
            let _ = writeln!(
                out,
                "**{backend}**: {} of {} targets met{}",
                with_target.len() - missed.len(),
                with_target.len(),
                if missed.is_empty() { "." } else { "; missed:" }
            );
            for f in missed {
                let _ = writeln!(
                    out,
                    "- {}: {}: {} against a target of {}: {}",
                    f.scenario,
                    f.metric,
                    fmt_value(f.value, &f.unit),
                    f.target_text(),
                    f.verdict
                );
            }
            out.push('\n');
        }
        for s in self.sections.iter().filter(|s| s.error.is_some()) {
            for line in s.error.as_deref().unwrap_or("").lines() {
                let _ = writeln!(
                    out,
                    "Scenario `{}` did not complete on {line}\n",
                    s.scenario
                );
            }
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut out = String::from("# Switchyard benchmark results\n\n");
        let _ = writeln!(
            out,
            "Mode: **{}**; machine: {} × {} ({} MiB RAM, Linux {}); load average at start: {}; suite took {:.0} s.\n",
            self.mode,
            self.machine.nproc,
            self.machine.cpu_model,
            self.machine.mem_total_mib,
            self.machine.kernel,
            self.machine.load_avg_at_start,
            self.duration_s
        );
        out.push_str(
            "Everything runs on this one machine over loopback: the services, the load generators and the \
             measuring subscribers share its cores. \"original\" columns quote the issues' figures for the \
             Node system (other machine): reference only, not measured here.\n\n",
        );
        let _ = writeln!(
            out,
            "Backends side by side: **embedded** = SQLite files + the HTTP event bus (`switchyard serve event-bus`); \
             **production** = PostgreSQL + NATS JetStream (a fresh database per service and a fresh stream per run, \
             dropped afterwards). Ratios are measured in the same run on the same backend.{}\n",
            match &self.production_skipped {
                Some(why) => format!(" **Production was skipped:** {why}."),
                None => String::new(),
            }
        );
        for s in &self.sections {
            out.push_str(&s.markdown());
        }
        out.push_str(&self.summary_markdown());
        out
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let md = dir.join("latest.md");
        std::fs::write(&md, self.markdown())
            .with_context(|| format!("writing {}", md.display()))?;
        let json = dir.join("latest.json");
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(&json, text + "\n")
            .with_context(|| format!("writing {}", json.display()))?;
        Ok(())
    }
}

/// Percentiles (nearest rank) of an unsorted sample.
pub struct Dist {
    sorted: Vec<f64>,
}

impl Dist {
    pub fn new(mut values: Vec<f64>) -> Dist {
        values.retain(|v| v.is_finite());
        values.sort_by(f64::total_cmp);
        Dist { sorted: values }
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn pct(&self, p: f64) -> f64 {
        if self.sorted.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.sorted.len() as f64).ceil() as usize;
        self.sorted[rank.clamp(1, self.sorted.len()) - 1]
    }

    pub fn max(&self) -> f64 {
        self.sorted.last().copied().unwrap_or(f64::NAN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        assert_eq!(fmt_num(1234567.891, 0), "1,234,568");
        assert_eq!(fmt_num(999.5, 1), "999.5");
        assert_eq!(fmt_value(3.256, "ms"), "3.26 ms");
        assert_eq!(fmt_value(5000.0, "events/s"), "5,000 events/s");
    }

    #[test]
    fn verdicts_say_by_how_much() {
        let f = Figure::at_least("bus", "x", 4000.0, "events/s", 5000.0);
        assert_eq!(f.pass, Some(false));
        assert_eq!(f.verdict, "FAIL (20% below target)");
        let f = Figure::at_most("bus", "p99", 25.0, "ms", 10.0);
        assert_eq!(f.verdict, "FAIL (2.5× the limit)");
        let f = Figure::at_most("bus", "lost", 0.0, "count", 0.0);
        assert_eq!(f.verdict, "pass");
    }

    #[test]
    fn percentiles() {
        let d = Dist::new((1..=100).map(f64::from).collect());
        assert_eq!(d.pct(50.0), 50.0);
        assert_eq!(d.pct(99.0), 99.0);
        assert_eq!(d.max(), 100.0);
    }
}

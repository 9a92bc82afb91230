//! Running `wrk` and reading its report.

use std::time::Duration;

use anyhow::{Context, bail};

#[derive(Debug, Clone, Default)]
pub struct WrkResult {
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub requests: u64,
    pub non_2xx: u64,
    pub socket_errors: u64,
}

/// Fails with an install hint when `wrk` is not on PATH.
pub fn check_installed() -> anyhow::Result<()> {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join("wrk").is_file()))
        .unwrap_or(false);
    if !found {
        bail!("`wrk` is not on PATH: install it (Debian/Ubuntu: `apt-get install wrk`)");
    }
    Ok(())
}

/// `wrk -t<threads> -c<conns> -d<secs>s --latency <url>`.
pub async fn run(url: &str, threads: u32, conns: u32, secs: u64) -> anyhow::Result<WrkResult> {
    run_with_headers(url, threads, conns, secs, &[]).await
}

/// [`run`] with request headers (`"Cookie: session=..."`).
pub async fn run_with_headers(
    url: &str,
    threads: u32,
    conns: u32,
    secs: u64,
    headers: &[String],
) -> anyhow::Result<WrkResult> {
    let mut cmd = tokio::process::Command::new("wrk");
    cmd.args([
        format!("-t{threads}"),
        format!("-c{conns}"),
        format!("-d{secs}s"),
        "--latency".to_string(),
        "--timeout".to_string(),
        "5s".to_string(),
    ]);
    for h in headers {
        cmd.args(["-H", h.as_str()]);
    }
    cmd.arg(url)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(secs + 30), cmd.output())
        .await
        .context("wrk did not finish in time")?
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&text).with_context(|| format!("reading wrk's output:\n{text}"))
}

/// A wrk duration ("812.00us", "1.23ms", "2.00s", "1.00m") in milliseconds.
fn duration_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, factor) = if let Some(n) = s.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000.0)
    } else {
        (s, 1.0)
    };
    num.parse::<f64>().ok().map(|v| v * factor)
}

pub fn parse(text: &str) -> anyhow::Result<WrkResult> {
    let mut r = WrkResult::default();
    let mut in_dist = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("Latency Distribution") {
            in_dist = true;
            continue;
        }
        if in_dist {
            if let Some((p, v)) = t.split_once(char::is_whitespace) {
                match p {
                    "50%" => r.p50_ms = duration_ms(v).unwrap_or(f64::NAN),
                    "99%" => r.p99_ms = duration_ms(v).unwrap_or(f64::NAN),
                    "75%" | "90%" => {}
                    _ => in_dist = false,
                }
            } else {
                in_dist = false;
            }
        }
        if t.starts_with("Latency") && !t.starts_with("Latency Distribution") {
            // "Latency   1.23ms  456.00us  12.34ms   90.00%": avg, stdev, max, +/- stdev.
            if let Some(max) = t.split_whitespace().nth(3) {
                r.max_ms = duration_ms(max).unwrap_or(f64::NAN);
            }
        } else if let Some(v) = t.strip_prefix("Requests/sec:") {
            r.requests_per_sec = v.trim().parse().context("Requests/sec")?;
        } else if t.contains("requests in") {
            r.requests = t
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            r.socket_errors = v
                .split(',')
                .filter_map(|part| part.split_whitespace().last())
                .filter_map(|n| n.parse::<u64>().ok())
                .sum();
        }
    }
    if r.requests_per_sec <= 0.0 {
        bail!("no Requests/sec line");
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_latency_output() {
        let text = "Running 10s test @ http://127.0.0.1:1/posts
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms  512.00us  25.30ms   91.00%
    Req/Sec    30.12k     1.20k   33.00k    80.00%
  Latency Distribution
     50%    2.00ms
     75%    2.20ms
     90%    2.50ms
     99%  850.00us
  299712 requests in 10.00s, 7.00GB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:  29970.50
Transfer/sec:    716.00MB
";
        let r = parse(text).expect("parses");
        assert_eq!(r.requests_per_sec, 29970.5);
        assert_eq!(r.p50_ms, 2.0);
        assert!((r.p99_ms - 0.85).abs() < 1e-9);
        assert!((r.max_ms - 25.3).abs() < 1e-9);
        assert_eq!(r.requests, 299712);
        assert_eq!(r.socket_errors, 3);
        assert_eq!(r.non_2xx, 5);
    }
}

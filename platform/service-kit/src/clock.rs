//! The wall clock as the services store it: milliseconds since the Unix epoch.
//!
//! Timestamps in the databases (the bus's log, outbox rows, timers, throttles, payments)
//! are `BIGINT` milliseconds so that both dialects store and compare them alike.

/// Milliseconds since the Unix epoch; 0 for a clock set before it, `i64::MAX` past the
/// year 292 million, so a strange clock never panics a request.
pub fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_system_clock_in_milliseconds() {
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let now = unix_millis();
        // After 2020-01-01 and within a second of the reading above.
        assert!(now > 1_577_836_800_000, "{now}");
        assert!(
            (i128::from(now) - before as i128).abs() < 1_000,
            "{now} vs {before}"
        );
    }
}

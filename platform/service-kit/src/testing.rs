//! The rule for tests that need an external server (PostgreSQL, NATS, a browser): skip
//! with a message when it is missing on a developer machine, fail under CI.
//!
//! A skip on CI would turn a broken CI setup into a green build that tests nothing, so
//! there a missing server is a failure. One helper keeps every suite agreeing on what
//! "under CI" means.
//!
//! ```no_run
//! fn postgres_or_skip() -> Option<String> {
//!     let url = "postgres://postgres@127.0.0.1:5432".to_string();
//!     let reachable = false; // probe the server here
//!     if !reachable {
//!         switchyard_kit::testing::skip_or_fail(&format!("PostgreSQL not reachable at {url}"));
//!         return None;
//!     }
//!     Some(url)
//! }
//! ```

/// Whether the tests run under CI: the environment variable `CI` is `true` or `1`
/// (case-insensitive, surrounding spaces ignored), as CI systems set it.
pub fn under_ci() -> bool {
    ci_value_means_ci(std::env::var("CI").ok().as_deref())
}

/// Reports that a test cannot run because `why` (e.g. "NATS not reachable at ...").
///
/// Under CI ([`under_ci`]) it panics, failing the test. Otherwise it prints
/// `skipped: {why}` to stderr and returns `false`, so a check returning `bool` can end with
/// `return skip_or_fail(...)`; elsewhere call it and then return early (`return;`,
/// `return None;`).
#[track_caller]
pub fn skip_or_fail(why: &str) -> bool {
    skip_or_fail_with(under_ci(), why)
}

#[track_caller]
fn skip_or_fail_with(ci: bool, why: &str) -> bool {
    if ci {
        panic!("{why} (CI=true: a missing server is a failure, not a skip)");
    }
    eprintln!("skipped: {why}");
    false
}

/// The parsing behind [`under_ci`], apart from the process environment so it can be tested.
fn ci_value_means_ci(value: Option<&str>) -> bool {
    value
        .map(str::trim)
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_is_true_or_1() {
        for yes in ["true", "TRUE", "True", " true\n", "1", " 1 "] {
            assert!(ci_value_means_ci(Some(yes)), "{yes:?}");
        }
        for no in [
            None,
            Some(""),
            Some("false"),
            Some("0"),
            Some("yes"),
            Some("truthy"),
        ] {
            assert!(!ci_value_means_ci(no), "{no:?}");
        }
    }

    #[test]
    fn outside_ci_a_missing_server_is_a_skip() {
        assert!(!skip_or_fail_with(false, "no server"));
    }

    #[test]
    #[should_panic(expected = "no server (CI=true: a missing server is a failure, not a skip)")]
    fn under_ci_a_missing_server_is_a_failure() {
        skip_or_fail_with(true, "no server");
    }
}

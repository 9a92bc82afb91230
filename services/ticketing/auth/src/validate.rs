//! The contract's input checks, every failing field reported at once.

use serde_json::Value;
use switchyard_kit::ApiError;

/// Longest email accepted (RFC 5321's path limit).
const MAX_EMAIL: usize = 254;
/// Longest password read at sign-in: longer ones cannot have been signed up (the limit
/// there is 20 characters), and are refused before any hashing.
pub const MAX_SIGNIN_PASSWORD: usize = 1024;

/// A trimmed, lower-cased email, if `value` is a plausible address: one `@`, a non-empty
/// local part of at most 64 characters, a domain of dot-separated labels of letters,
/// digits and hyphens with at least one dot, no spaces or control characters.
pub fn email(value: Option<&Value>) -> Option<String> {
    let email = value?.as_str()?.trim().to_lowercase();
    if email.is_empty() || email.len() > MAX_EMAIL {
        return None;
    }
    let (local, domain) = email.rsplit_once('@')?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()));
    (local_ok && domain_ok).then_some(email)
}

/// A trimmed password, if it is a string.
pub fn password(value: Option<&Value>) -> Option<String> {
    value?.as_str().map(|p| p.trim().to_string())
}

/// Signup's `{email, password}`: email valid, password 4 to 20 characters.
pub fn signup(body: &Value) -> Result<(String, String), ApiError> {
    let email = email(body.get("email"));
    let password = password(body.get("password")).filter(|p| (4..=20).contains(&p.chars().count()));
    match (email, password) {
        (Some(e), Some(p)) => Ok((e, p)),
        (e, p) => {
            let mut errors = Vec::new();
            if e.is_none() {
                errors.push(("email", "Email must be valid"));
            }
            if p.is_none() {
                errors.push(("password", "Password must be between 4 and 20 characters"));
            }
            Err(ApiError::fields(errors))
        }
    }
}

/// Signin's `{email, password}`: email valid, password not empty.
pub fn signin(body: &Value) -> Result<(String, String), ApiError> {
    let email = email(body.get("email"));
    let password = password(body.get("password")).filter(|p| !p.is_empty());
    match (email, password) {
        (Some(e), Some(p)) => Ok((e, p)),
        (e, p) => {
            let mut errors = Vec::new();
            if e.is_none() {
                errors.push(("email", "Email must be valid"));
            }
            if p.is_none() {
                errors.push(("password", "You must supply a password"));
            }
            Err(ApiError::fields(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            email(Some(&json!("  Test@Test.COM "))).as_deref(),
            Some("test@test.com")
        );
        for bad in [
            "",
            "plain",
            "a@b",
            "a@b.c",
            "@b.com",
            "a b@c.com",
            "a@-b.com",
            "a..b@c.com",
            "a@b..com",
        ] {
            assert_eq!(email(Some(&json!(bad))), None, "{bad}");
        }
        assert_eq!(email(Some(&json!(5))), None);
        assert_eq!(email(None), None);
    }

    #[test]
    fn every_failing_field_is_listed() {
        let err = signup(&json!({})).expect_err("both missing");
        let fields: Vec<_> = err.errors.iter().map(|e| e.field.clone()).collect();
        assert_eq!(
            fields,
            [Some("email".to_string()), Some("password".to_string())]
        );
        assert_eq!(
            err.errors[1].message,
            "Password must be between 4 and 20 characters"
        );
        let err = signup(&json!({"email": "a@b.co", "password": "  abc  "})).expect_err("short");
        assert_eq!(err.errors.len(), 1);
        assert!(signup(&json!({"email": "a@b.co", "password": " abcd "})).is_ok());
        assert!(signup(&json!({"email": "a@b.co", "password": "a".repeat(21)})).is_err());
        let err = signin(&json!({"email": "a@b.co", "password": "   "})).expect_err("empty");
        assert_eq!(err.errors[0].message, "You must supply a password");
    }
}

//! Request ids: the `x-request-id` a request is known by on every log line and in the
//! events it causes (`correlationId`).
//!
//! A client may send its own id, and it is kept when it is short and plain: at most
//! [`MAX_REQUEST_ID_LEN`] bytes of letters, digits and `-._:/+=@`. Anything else (a
//! 70,000-character header, spaces, quotes, non-ASCII) is replaced by a fresh UUID, so a
//! client cannot make an event too large for the bus, flood the logs, or have its header
//! echoed back. The gateway and every service apply the same rule.

use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// The request id header, read from the request and set on the answer.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-sent request id that is kept (bytes); the envelope's `correlationId`
/// has the same bound.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether a client's request id is kept as it is.
pub fn is_acceptable(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:/+=@".contains(b))
}

/// A fresh request id (a UUID v4).
pub fn fresh() -> HeaderValue {
    let mut buffer = uuid::Uuid::encode_buffer();
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buffer);
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("request"))
}

/// The request's id: the client's when [`is_acceptable`], else a fresh one, which replaces
/// whatever the client sent (every `x-request-id` header of the request).
pub fn ensure(headers: &mut HeaderMap) -> HeaderValue {
    let mut values = headers.get_all(&X_REQUEST_ID).iter();
    if let (Some(id), None) = (values.next(), values.next())
        && is_acceptable(id.as_bytes())
    {
        return id.clone();
    }
    let id = fresh();
    headers.insert(X_REQUEST_ID, id.clone());
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ensure_of(values: &[&[u8]]) -> (HeaderValue, HeaderMap) {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(X_REQUEST_ID, HeaderValue::from_bytes(v).expect("value"));
        }
        let id = ensure(&mut headers);
        (id, headers)
    }

    #[test]
    fn a_plain_id_up_to_the_limit_is_kept() {
        let at_limit = "a".repeat(MAX_REQUEST_ID_LEN);
        for id in [
            "abc-123",
            "req_1.2:3/4+5=6@x",
            "0f8e7d6c-aaaa-bbbb-cccc-1234567890ab",
            at_limit.as_str(),
        ] {
            let (kept, headers) = ensure_of(&[id.as_bytes()]);
            assert_eq!(kept.as_bytes(), id.as_bytes());
            assert_eq!(headers.get_all(&X_REQUEST_ID).iter().count(), 1);
        }
    }

    #[test]
    fn long_odd_or_repeated_ids_are_replaced() {
        let over = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        let huge = "x".repeat(70_000);
        for values in [
            vec![over.as_bytes()],
            vec![huge.as_bytes()],
            vec![b"has space".as_slice()],
            vec![b"quote\"d".as_slice()],
            vec![b"caf\xc3\xa9".as_slice()],
            vec![b"".as_slice()],
            vec![b"one".as_slice(), b"two".as_slice()],
        ] {
            let (id, headers) = ensure_of(&values);
            let text = id.to_str().expect("ascii");
            assert!(uuid::Uuid::parse_str(text).is_ok(), "{text:?}");
            let sent: Vec<_> = headers.get_all(&X_REQUEST_ID).iter().collect();
            assert_eq!(sent, [&id], "the request carries the new id only");
        }
    }

    #[test]
    fn a_missing_id_is_generated() {
        let (id, headers) = ensure_of(&[]);
        assert!(is_acceptable(id.as_bytes()));
        assert_eq!(headers.get(&X_REQUEST_ID), Some(&id));
    }
}

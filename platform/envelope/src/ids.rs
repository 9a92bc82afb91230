//! Id generation.

/// A new event id: a UUID v7 (time-ordered, unique across producers).
pub fn event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A new entity id (post, comment): 16 lowercase hex characters (64 random bits).
///
/// The original system used 8 hex characters; clients treat ids as opaque strings,
/// so a longer id stays compatible while making collisions practically impossible.
pub fn entity_id() -> String {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut out = String::with_capacity(16);
    for b in &bytes[..8] {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The current time as RFC 3339, for `occurredAt`.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_ids_are_16_hex_and_unique() {
        let a = entity_id();
        let b = entity_id();
        assert_eq!(a.len(), 16);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
    }

    #[test]
    fn event_ids_are_unique() {
        assert_ne!(event_id(), event_id());
    }
}

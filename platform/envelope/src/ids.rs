//! Id generation, and [`id_type!`](crate::id_type): one newtype per kind of id.

/// Declares an id newtype: a `String` on the wire (`#[serde(transparent)]`), a type of its
/// own in the code, so a ticket's id cannot be passed where an order's is expected.
///
/// With the calling crate's `sqlx` feature on, an id binds and decodes as text in queries.
///
/// The contract checks an id's length where it decodes it; `from_string` takes an id as
/// received or as made. In an OpenAPI or AsyncAPI schema a field of an id type says
/// `#[schema(value_type = String)]`.
///
/// ```
/// switchyard_events::id_type!(
///     /// A widget's id.
///     pub WidgetId
/// );
/// let id = WidgetId::from_string("w1".to_string());
/// assert_eq!(id.as_str(), "w1");
/// assert_eq!(serde_json::to_string(&id).unwrap(), r#""w1""#);
/// ```
#[macro_export]
macro_rules! id_type {
    ($(#[$meta:meta])* $vis:vis $name:ident) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
        )]
        #[serde(transparent)]
        $vis struct $name(::std::string::String);

        impl $name {
            /// An id as received or as made.
            pub fn from_string(id: ::std::string::String) -> Self {
                $name(id)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> ::std::string::String {
                self.0
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl ::std::convert::From<::std::string::String> for $name {
            fn from(id: ::std::string::String) -> Self {
                $name(id)
            }
        }

        impl ::std::convert::From<&str> for $name {
            fn from(id: &str) -> Self {
                $name(id.to_string())
            }
        }

        impl ::std::convert::AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl ::std::cmp::PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        /// Binds as text.
        #[cfg(feature = "sqlx")]
        impl sqlx::Type<sqlx::Any> for $name {
            fn type_info() -> <sqlx::Any as sqlx::Database>::TypeInfo {
                <::std::string::String as sqlx::Type<sqlx::Any>>::type_info()
            }

            fn compatible(ty: &<sqlx::Any as sqlx::Database>::TypeInfo) -> bool {
                <::std::string::String as sqlx::Type<sqlx::Any>>::compatible(ty)
            }
        }

        #[cfg(feature = "sqlx")]
        impl<'q> sqlx::Encode<'q, sqlx::Any> for $name {
            fn encode(
                self,
                buf: &mut <sqlx::Any as sqlx::Database>::ArgumentBuffer,
            ) -> ::std::result::Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <::std::string::String as sqlx::Encode<'q, sqlx::Any>>::encode(self.0, buf)
            }

            fn encode_by_ref(
                &self,
                buf: &mut <sqlx::Any as sqlx::Database>::ArgumentBuffer,
            ) -> ::std::result::Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <::std::string::String as sqlx::Encode<'q, sqlx::Any>>::encode_by_ref(&self.0, buf)
            }
        }

        #[cfg(feature = "sqlx")]
        impl<'r> sqlx::Decode<'r, sqlx::Any> for $name {
            fn decode(
                value: <sqlx::Any as sqlx::Database>::ValueRef<'r>,
            ) -> ::std::result::Result<Self, sqlx::error::BoxDynError> {
                <::std::string::String as sqlx::Decode<'r, sqlx::Any>>::decode(value).map($name)
            }
        }

        impl ::std::cmp::PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

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

//! The traits behind [`request_body!`](crate::request_body).

use serde_json::{Map, Value};

/// What is wrong with a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// The body is JSON but not an object.
    NotAnObject,
    /// Every failing field with its message, in the type's field order (a field may have
    /// several).
    Fields(Vec<(&'static str, String)>),
}

/// One field's value, parsed from what the body holds under its name (`None`: absent).
///
/// `Err` holds the contract's messages for people, one or more.
pub trait FieldValue: Sized {
    fn parse_field(field: &str, value: Option<&Value>) -> Result<Self, Vec<String>>;
}

/// An optional field: absent or `null` is `None`, anything else must parse.
impl<T: FieldValue> FieldValue for Option<T> {
    fn parse_field(field: &str, value: Option<&Value>) -> Result<Self, Vec<String>> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(value) => T::parse_field(field, Some(value)).map(Some),
        }
    }
}

/// A request body: a JSON object parsed field by field, every failing field reported.
/// Implemented by [`request_body!`](crate::request_body).
pub trait RequestBody: Sized {
    fn from_object(body: &Map<String, Value>) -> Result<Self, BodyError>;

    /// Parses a JSON value, which must be an object.
    fn from_json(body: &Value) -> Result<Self, BodyError> {
        match body.as_object() {
            Some(object) => Self::from_object(object),
            None => Err(BodyError::NotAnObject),
        }
    }
}

/// Declares a request body: a struct whose fields each name their JSON key
/// (`field: Type = "jsonKey"`), with [`RequestBody`] parsing it field by field.
///
/// The struct's own attributes (derives, docs) and each field's (`#[schema(...)]` limits
/// for the OpenAPI document) are kept; the JSON key becomes the schema's property name.
///
/// ```
/// use switchyard_wire::{RequestBody, Text, request_body};
///
/// request_body! {
///     /// A post.
///     #[derive(Debug, utoipa::ToSchema)]
///     pub struct NewPost {
///         #[schema(value_type = String, max_length = 300)]
///         pub title: Text<300> = "title",
///     }
/// }
///
/// let post = NewPost::from_json(&serde_json::json!({"title": "Rust"})).unwrap();
/// assert_eq!(post.title.as_str(), "Rust");
/// ```
#[macro_export]
macro_rules! request_body {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                $fvis:vis $field:ident : $ty:ty = $key:literal
            ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $(
                $(#[$fmeta])*
                #[schema(rename = $key)]
                $fvis $field: $ty,
            )+
        }

        impl $crate::RequestBody for $name {
            fn from_object(
                body: &$crate::__json::Map<::std::string::String, $crate::__json::Value>,
            ) -> ::std::result::Result<Self, $crate::BodyError> {
                let mut errors: ::std::vec::Vec<(&'static str, ::std::string::String)> =
                    ::std::vec::Vec::new();
                $(
                    let $field = match <$ty as $crate::FieldValue>::parse_field($key, body.get($key)) {
                        ::std::result::Result::Ok(value) => ::std::option::Option::Some(value),
                        ::std::result::Result::Err(messages) => {
                            errors.extend(messages.into_iter().map(|message| ($key, message)));
                            ::std::option::Option::None
                        }
                    };
                )+
                match ($($field,)+) {
                    ($(::std::option::Option::Some($field),)+) => ::std::result::Result::Ok($name { $($field,)+ }),
                    _ => ::std::result::Result::Err($crate::BodyError::Fields(errors)),
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::{BodyError, FieldValue, RequestBody, Text};

    /// A count of at least one.
    #[derive(Debug, PartialEq)]
    struct Count(u32);

    impl FieldValue for Count {
        fn parse_field(
            field: &str,
            value: Option<&serde_json::Value>,
        ) -> Result<Self, Vec<String>> {
            value
                .and_then(serde_json::Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n >= 1)
                .map(Count)
                .ok_or_else(|| vec![format!("{field} must be a count")])
        }
    }

    crate::request_body! {
        #[derive(Debug, PartialEq, utoipa::ToSchema)]
        struct Order {
            #[schema(value_type = String)]
            name: Text<5> = "name",
            #[schema(value_type = u32)]
            count: Count = "itemCount",
            #[schema(value_type = Option<String>)]
            note: Option<Text<3>> = "note",
        }
    }

    #[test]
    fn every_failing_field_is_reported_under_its_json_key() {
        let err = Order::from_json(&json!({"name": "", "itemCount": 0, "note": 5}));
        assert_eq!(
            err,
            Err(BodyError::Fields(vec![
                ("name", "name must not be empty".into()),
                ("itemCount", "itemCount must be a count".into()),
                ("note", "note must be a string".into()),
            ]))
        );
        assert_eq!(Order::from_json(&json!([1])), Err(BodyError::NotAnObject));
    }

    #[test]
    fn a_good_body_parses_and_optional_fields_may_be_absent() {
        let order = Order::from_json(&json!({"name": "ab", "itemCount": 2, "extra": true}));
        assert_eq!(
            order,
            Ok(Order {
                name: Text::parse_field("name", Some(&json!("ab"))).expect("text"),
                count: Count(2),
                note: None,
            })
        );
    }

    #[test]
    fn the_schema_names_the_json_keys() {
        use utoipa::PartialSchema;
        let schema = serde_json::to_value(Order::schema()).expect("json");
        let mut keys: Vec<&String> = schema["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .collect();
        keys.sort();
        assert_eq!(keys, ["itemCount", "name", "note"]);
        assert_eq!(schema["required"], serde_json::json!(["name", "itemCount"]));
    }
}

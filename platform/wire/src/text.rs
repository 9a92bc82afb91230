//! [`Text`]: a required line of text with a length limit.

use serde_json::Value;

use crate::FieldValue;

/// A required, non-blank string of at most `MAX` characters, without NUL (which
/// PostgreSQL cannot store in text: refused on every backend alike). Kept as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text<const MAX: usize>(String);

impl<const MAX: usize> Text<MAX> {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl<const MAX: usize> FieldValue for Text<MAX> {
    fn parse_field(field: &str, value: Option<&Value>) -> Result<Self, Vec<String>> {
        let message = match value {
            None | Some(Value::Null) => format!("{field} is required"),
            Some(Value::String(s)) if s.trim().is_empty() => format!("{field} must not be empty"),
            Some(Value::String(s)) if s.chars().count() > MAX => {
                format!("{field} must be at most {MAX} characters")
            }
            Some(Value::String(s)) if s.contains('\0') => {
                format!("{field} must not contain NUL characters")
            }
            Some(Value::String(s)) => return Ok(Text(s.clone())),
            Some(_) => format!("{field} must be a string"),
        };
        Err(vec![message])
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn text_rules() {
        let parse = |v: Value| Text::<3>::parse_field("t", Some(&v));
        assert_eq!(parse(json!("ab")).map(Text::into_string), Ok("ab".into()));
        assert_eq!(parse(json!(" ")), Err(vec!["t must not be empty".into()]));
        assert_eq!(
            parse(json!("abcd")),
            Err(vec!["t must be at most 3 characters".into()])
        );
        assert_eq!(
            parse(json!("a\u{0}")),
            Err(vec!["t must not contain NUL characters".into()])
        );
        assert_eq!(parse(json!(3)), Err(vec!["t must be a string".into()]));
        assert_eq!(
            Text::<3>::parse_field("t", None),
            Err(vec!["t is required".into()])
        );
    }
}

//! [`Price`]: money as a whole number of cents inside, the course's JSON number outside.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A ticket's price, in cents. On the wire it is the course's JSON number of dollars:
/// written as the original's JavaScript wrote it (`20` when whole, `20.5` otherwise) and
/// read from a number, or from a string holding one (`"20.00"`, as a form sends it),
/// rounded to cents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Price(i64);

impl Price {
    /// The provider's smallest charge (Stripe's, 0.50 USD): a cheaper ticket could be
    /// ordered but never paid.
    pub const MIN_SALE: Price = Price(50);
    /// The highest price: a charge is at most eight digits of cents.
    pub const MAX: Price = Price(99_999_999);

    pub const fn from_cents(cents: i64) -> Price {
        Price(cents)
    }

    /// The amount a charge is made for.
    pub const fn cents(self) -> i64 {
        self.0
    }

    /// A number of dollars rounded to cents; `None` when it is not finite or not between
    /// 0 and [`Price::MAX`] once rounded.
    pub fn from_number(dollars: f64) -> Option<Price> {
        if !dollars.is_finite() {
            return None;
        }
        let cents = (dollars * 100.0).round();
        // Checked as a float first: the cast saturates, it never wraps.
        (0.0..=Price::MAX.0 as f64)
            .contains(&cents)
            .then_some(Price(cents as i64))
    }

    /// A number or a numeric string of dollars, as [`Price::from_number`] takes it.
    pub fn from_json(value: &serde_json::Value) -> Option<Price> {
        let dollars = match value {
            serde_json::Value::Number(n) => n.as_f64()?,
            serde_json::Value::String(s) => s.trim().parse::<f64>().ok()?,
            _ => return None,
        };
        Price::from_number(dollars)
    }

    /// The dollars as a number, for a column of numbers (exact: at most eight digits of
    /// cents).
    pub fn as_number(self) -> f64 {
        self.0 as f64 / 100.0
    }
}

impl std::fmt::Display for Price {
    /// `20.50`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

impl Serialize for Price {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0 % 100 == 0 {
            serializer.serialize_i64(self.0 / 100)
        } else {
            serializer.serialize_f64(self.as_number())
        }
    }
}

impl<'de> Deserialize<'de> for Price {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Price::from_json(&value).ok_or_else(|| {
            serde::de::Error::custom("a price: a number of dollars from 0 to 999999.99")
        })
    }
}

/// In a query a price binds and decodes as the number of dollars its column holds
/// (exact: at most eight digits of cents); a stored number out of range fails to decode.
#[cfg(feature = "sqlx")]
mod sql {
    use sqlx::error::BoxDynError;
    use sqlx::{Any, Database, Decode, Encode, Type};

    use super::Price;

    impl Type<Any> for Price {
        fn type_info() -> <Any as Database>::TypeInfo {
            <f64 as Type<Any>>::type_info()
        }

        fn compatible(ty: &<Any as Database>::TypeInfo) -> bool {
            <f64 as Type<Any>>::compatible(ty)
        }
    }

    impl<'q> Encode<'q, Any> for Price {
        fn encode_by_ref(
            &self,
            buf: &mut <Any as Database>::ArgumentBuffer,
        ) -> Result<sqlx::encode::IsNull, BoxDynError> {
            <f64 as Encode<'q, Any>>::encode_by_ref(&self.as_number(), buf)
        }
    }

    impl<'r> Decode<'r, Any> for Price {
        fn decode(value: <Any as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
            let dollars = <f64 as Decode<'r, Any>>::decode(value)?;
            Price::from_number(dollars)
                .ok_or_else(|| format!("price {dollars} out of range").into())
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn prices_are_cents_inside_and_the_course_number_outside() {
        assert_eq!(Price::from_json(&json!(20)), Some(Price::from_cents(2000)));
        assert_eq!(
            Price::from_json(&json!("20.00")),
            Some(Price::from_cents(2000))
        );
        assert_eq!(
            Price::from_json(&json!(" 12.345 ")),
            Some(Price::from_cents(1235))
        );
        assert_eq!(Price::from_json(&json!(0.1)), Some(Price::from_cents(10)));
        for bad in [
            json!(-1),
            json!("abc"),
            json!(null),
            json!(true),
            json!(1e9),
        ] {
            assert_eq!(Price::from_json(&bad), None, "{bad}");
        }
        assert_eq!(
            serde_json::to_value(Price::from_cents(2000)).ok(),
            Some(json!(20))
        );
        assert_eq!(
            serde_json::to_value(Price::from_cents(2050)).ok(),
            Some(json!(20.5))
        );
        assert_eq!(
            serde_json::to_value(Price::from_cents(1)).ok(),
            Some(json!(0.01))
        );
        assert_eq!(Price::from_cents(2050).to_string(), "20.50");
        assert_eq!(Price::from_cents(5).to_string(), "0.05");
        let back: Price = serde_json::from_value(json!("0.50")).expect("price");
        assert_eq!(back, Price::MIN_SALE);
        assert!(serde_json::from_value::<Price>(json!(-0.5)).is_err());
        // Every cent round-trips through the number column and JSON.
        for cents in [1, 10, 99, 12345, Price::MAX.cents()] {
            let price = Price::from_cents(cents);
            assert_eq!(Price::from_number(price.as_number()), Some(price));
            let json = serde_json::to_value(price).expect("json");
            assert_eq!(Price::from_json(&json), Some(price));
        }
    }
}

//! The records the pipeline moves, and the schema they are validated against.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One valid record, as loaded into the sink. Its key is `id` (within one source).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The record's key: a non-empty string of at most 64 characters.
    pub id: String,
    /// A display name: non-empty, at most 128 characters.
    pub name: String,
    /// The amount in cents (the source sends a decimal amount, at most 2 decimals, >= 0).
    pub amount_cents: i64,
    /// An ISO 4217-style code: three upper-case ASCII letters.
    pub currency: String,
    /// When the source last changed the record, seconds since the Unix epoch (>= 0).
    pub updated_at: i64,
}

/// A row that failed validation: kept, with the reason, in the sink's rejected table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedRow {
    /// Where the row was in the source (`p<page>-r<row>`): the key of the rejected table,
    /// stable across re-runs, so re-loading a rejected row changes nothing.
    pub position: String,
    /// Why the row was rejected.
    pub reason: String,
    /// The row as received (JSON text).
    pub raw: String,
}

/// Validate one raw row against the schema; on failure, the reason.
///
/// ```
/// use palisade_examples::etl::record::validate;
/// use serde_json::json;
///
/// let ok = json!({"id": "r-1", "name": "Ada", "amount": 12.5, "currency": "EUR", "updated_at": 1700000000});
/// assert_eq!(validate(&ok).unwrap().amount_cents, 1250);
/// let bad = json!({"id": "r-2", "name": "Bob", "amount": -1, "currency": "EUR", "updated_at": 1});
/// assert!(validate(&bad).unwrap_err().contains("amount"));
/// ```
pub fn validate(raw: &Value) -> Result<Record, String> {
    let obj = raw.as_object().ok_or("row is not a JSON object")?;
    let text = |field: &'static str, max: usize| -> Result<String, String> {
        match obj.get(field) {
            None | Some(Value::Null) => Err(format!("missing field `{field}`")),
            Some(Value::String(s)) if s.trim().is_empty() => Err(format!("`{field}` is empty")),
            Some(Value::String(s)) if s.chars().count() > max => {
                Err(format!("`{field}` is longer than {max} characters"))
            }
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("`{field}` is not a string")),
        }
    };
    let id = text("id", 64)?;
    let name = text("name", 128)?;
    let amount_cents = amount(obj.get("amount"))?;
    let currency = text("currency", 3)?;
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "`currency` {currency:?} is not three upper-case letters"
        ));
    }
    let updated_at = match obj.get("updated_at") {
        None | Some(Value::Null) => return Err("missing field `updated_at`".into()),
        Some(v) => v
            .as_i64()
            .filter(|t| *t >= 0)
            .ok_or("`updated_at` is not a non-negative integer")?,
    };
    Ok(Record {
        id,
        name,
        amount_cents,
        currency,
        updated_at,
    })
}

fn amount(value: Option<&Value>) -> Result<i64, String> {
    let value = match value {
        None | Some(Value::Null) => return Err("missing field `amount`".into()),
        Some(v) => v.as_f64().ok_or("`amount` is not a number")?,
    };
    if !value.is_finite() || value < 0.0 {
        return Err(format!("`amount` {value} is negative or not finite"));
    }
    let cents = (value * 100.0).round();
    if (cents / 100.0 - value).abs() > 1e-9 || cents > 1e15 {
        return Err(format!(
            "`amount` {value} has more than 2 decimals or is too large"
        ));
    }
    // In range by the check above: at most 1e15, an exact integer in f64.
    #[allow(clippy::cast_possible_truncation)]
    Ok(cents as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row() -> Value {
        json!({"id": "a", "name": "n", "amount": 1.25, "currency": "USD", "updated_at": 5})
    }

    #[test]
    fn a_valid_row_becomes_a_record() {
        let r = validate(&row()).unwrap();
        assert_eq!(r.id, "a");
        assert_eq!(r.amount_cents, 125);
        assert_eq!(r.updated_at, 5);
    }

    #[test]
    fn each_schema_rule_rejects() {
        let cases = [
            ("id", json!(null)),
            ("id", json!("")),
            ("id", json!(7)),
            ("name", json!("x".repeat(129))),
            ("amount", json!("12")),
            ("amount", json!(-3)),
            ("amount", json!(1.234)),
            ("currency", json!("usd")),
            ("currency", json!("EURO")),
            ("updated_at", json!(-1)),
            ("updated_at", json!(1.5)),
        ];
        for (field, value) in cases {
            let mut r = row();
            r[field] = value.clone();
            let err = validate(&r).expect_err(&format!("{field}={value} must be rejected"));
            assert!(err.contains(field), "{err} names {field}");
        }
        assert!(validate(&json!([1, 2])).is_err());
    }
}

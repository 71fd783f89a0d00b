//! The columnar answer every API shares: pick and order the fields, page the rows, say whether
//! more remain. Rows are produced lazily, so skipped and unrequested pages cost only their keys.

use chrono::NaiveDate;
use serde::Serialize;
use serde_json::Value;

use super::model::round;

/// An API's columns: the first `defaults` are what an empty `fields` returns.
pub(crate) struct Schema {
    pub fields: &'static [&'static str],
    pub defaults: usize,
    /// Most rows one call returns (Tushare's per-API cap).
    pub max_rows: usize,
}

impl Schema {
    /// Column indices for a `fields` request: the known names in the order asked, each once;
    /// the defaults when none is known.
    pub fn select(&self, requested: &[String]) -> Vec<usize> {
        let mut columns: Vec<usize> = Vec::new();
        for i in requested.iter().filter_map(|name| self.fields.iter().position(|f| f == name)) {
            if !columns.contains(&i) {
                columns.push(i);
            }
        }
        if columns.is_empty() {
            columns.extend(0..self.defaults);
        }
        columns
    }
}

/// Which rows of the full answer one call returns.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Page {
    pub offset: usize,
    pub size: usize,
}

/// The `data` object of a successful answer.
#[derive(Debug, Serialize)]
pub(crate) struct Data {
    fields: Vec<&'static str>,
    items: Vec<Vec<Value>>,
    has_more: bool,
}

/// Builds `data` from the keys of every matching row, in answer order, and a function giving a
/// key's full row (one value per schema field).
pub(crate) fn answer<K>(
    schema: &Schema,
    columns: &[usize],
    page: Page,
    keys: impl Iterator<Item = K>,
    row: impl Fn(K) -> Vec<Value>,
) -> Data {
    let mut keys = keys.skip(page.offset);
    let items = keys
        .by_ref()
        .take(page.size)
        .map(|key| {
            let mut full = row(key);
            debug_assert_eq!(full.len(), schema.fields.len());
            columns.iter().map(|&c| full[c].take()).collect()
        })
        .collect();
    Data { fields: columns.iter().map(|&c| schema.fields[c]).collect(), items, has_more: keys.next().is_some() }
}

/// A number rounded to `dp` decimals; null when not finite.
pub(crate) fn num(x: f64, dp: i32) -> Value {
    serde_json::Number::from_f64(round(x, dp)).map_or(Value::Null, Value::Number)
}

/// A number, or null where Tushare leaves a blank.
pub(crate) fn opt_num(x: Option<f64>, dp: i32) -> Value {
    x.map_or(Value::Null, |x| num(x, dp))
}

/// A date the Tushare way: a YYYYMMDD string.
pub(crate) fn date(day: NaiveDate) -> Value {
    Value::String(day.format("%Y%m%d").to_string())
}

pub(crate) fn text(s: &str) -> Value {
    Value::String(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: Schema = Schema { fields: &["a", "b", "c"], defaults: 2, max_rows: 10 };

    fn rows(columns: &[usize], page: Page, n: u64) -> Data {
        answer(&SCHEMA, columns, page, 0..n, |k| vec![Value::from(k), Value::from(k * 10), Value::from(k * 100)])
    }

    #[test]
    fn fields_pick_and_order_columns() {
        let ask = |s: &str| SCHEMA.select(&s.split(',').map(String::from).collect::<Vec<_>>());
        assert_eq!(ask("c,a"), [2, 0]);
        assert_eq!(ask("c,nope,c"), [2]);
        assert_eq!(ask(""), [0, 1]);
        assert_eq!(ask("nope"), [0, 1]);
        let data = rows(&[2, 0], Page { offset: 0, size: 10 }, 2);
        assert_eq!(
            serde_json::to_value(&data).unwrap(),
            serde_json::json!({"fields": ["c", "a"], "items": [[0, 0], [100, 1]], "has_more": false})
        );
    }

    #[test]
    fn pages_report_what_remains() {
        let page = |offset, size| serde_json::to_value(rows(&[0], Page { offset, size }, 5)).unwrap();
        assert_eq!(page(0, 2)["items"], serde_json::json!([[0], [1]]));
        assert_eq!(page(0, 2)["has_more"], true);
        assert_eq!(page(3, 2)["items"], serde_json::json!([[3], [4]]));
        assert_eq!(page(3, 2)["has_more"], false);
        assert_eq!(page(9, 2)["items"], serde_json::json!([]));
    }

    #[test]
    fn numbers_round_like_tushare() {
        assert_eq!(num(1523.456, 2), serde_json::json!(1523.46));
        assert_eq!(num(f64::NAN, 2), Value::Null);
        assert_eq!(opt_num(None, 2), Value::Null);
        assert_eq!(date(NaiveDate::from_ymd_opt(2026, 4, 30).unwrap()), "20260430");
    }
}

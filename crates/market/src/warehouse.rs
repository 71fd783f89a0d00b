//! The DuckDB warehouse: market data on disk, also the cache behind every answer.
//!
//! One writer connection serialises fills; reads use their own connections, so a read never waits for a
//! fill of another key (DuckDB's MVCC gives each reader a consistent snapshot).

use std::path::Path;
use std::sync::Mutex;

use chrono::{DateTime, NaiveDate, Utc};
use duckdb::types::{TimeUnit, Value as DuckValue};
use duckdb::Connection;

use crate::tushare::{Row, Table};
use crate::MarketError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    Text,
    Date,
    Double,
    Int,
}

#[derive(Debug)]
pub struct Column {
    pub name: &'static str,
    pub ty: ColType,
}

const fn col(name: &'static str, ty: ColType) -> Column {
    Column { name, ty }
}

/// A warehouse table: its first `key_len` columns form the primary key; every table also records
/// `source` (who answered) and `fetched_at` (when), which the cite envelope reports.
#[derive(Debug)]
pub struct TableSpec {
    pub name: &'static str,
    pub columns: &'static [Column],
    pub key_len: usize,
    /// Keep the whole upstream row as JSON text (DuckDB's JSON type needs an extension we do not build),
    /// for tables where we serve a few of many fields.
    pub keep_raw: bool,
}

use ColType::{Date, Double, Int, Text};

pub const DAILY: TableSpec = TableSpec {
    name: "daily",
    columns: &[
        col("ts_code", Text),
        col("trade_date", Date),
        col("open", Double),
        col("high", Double),
        col("low", Double),
        col("close", Double),
        col("pre_close", Double),
        col("change", Double),
        col("pct_chg", Double),
        col("vol", Double),
        col("amount", Double),
    ],
    key_len: 2,
    keep_raw: false,
};

pub const DAILY_BASIC: TableSpec = TableSpec {
    name: "daily_basic",
    columns: &[
        col("ts_code", Text),
        col("trade_date", Date),
        col("close", Double),
        col("turnover_rate", Double),
        col("turnover_rate_f", Double),
        col("volume_ratio", Double),
        col("pe", Double),
        col("pe_ttm", Double),
        col("pb", Double),
        col("ps", Double),
        col("ps_ttm", Double),
        col("dv_ratio", Double),
        col("dv_ttm", Double),
        col("total_share", Double),
        col("float_share", Double),
        col("free_share", Double),
        col("total_mv", Double),
        col("circ_mv", Double),
    ],
    key_len: 2,
    keep_raw: false,
};

pub const FINA_INDICATOR: TableSpec = TableSpec {
    name: "fina_indicator",
    columns: &[
        col("ts_code", Text),
        col("end_date", Date),
        col("ann_date", Date),
        col("eps", Double),
        col("dt_eps", Double),
        col("bps", Double),
        col("roe", Double),
        col("roe_dt", Double),
        col("roa", Double),
        col("grossprofit_margin", Double),
        col("netprofit_margin", Double),
        col("debt_to_assets", Double),
        col("current_ratio", Double),
        col("quick_ratio", Double),
        col("or_yoy", Double),
        col("netprofit_yoy", Double),
    ],
    key_len: 2,
    keep_raw: true,
};

pub const TRADE_CAL: TableSpec = TableSpec {
    name: "trade_cal",
    columns: &[col("exchange", Text), col("cal_date", Date), col("is_open", Int), col("pretrade_date", Date)],
    key_len: 2,
    keep_raw: false,
};

pub const STOCK_BASIC: TableSpec = TableSpec {
    name: "stock_basic",
    columns: &[
        col("ts_code", Text),
        col("symbol", Text),
        col("name", Text),
        col("area", Text),
        col("industry", Text),
        col("market", Text),
        col("list_date", Date),
    ],
    key_len: 1,
    keep_raw: false,
};

pub const ADJ_FACTOR: TableSpec = TableSpec {
    name: "adj_factor",
    columns: &[col("ts_code", Text), col("trade_date", Date), col("adj_factor", Double)],
    key_len: 2,
    keep_raw: false,
};

pub const TABLES: [&TableSpec; 6] = [&DAILY, &DAILY_BASIC, &FINA_INDICATOR, &TRADE_CAL, &STOCK_BASIC, &ADJ_FACTOR];

/// The table named `name`.
pub fn table(name: &str) -> Option<&'static TableSpec> {
    TABLES.into_iter().find(|spec| spec.name == name)
}

impl TableSpec {
    /// The columns that identify a row.
    pub fn key_columns(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.columns[..self.key_len].iter().map(|column| column.name)
    }
}

impl TableSpec {
    /// The Tushare field list that fills this table.
    pub fn fields(&self) -> Vec<&'static str> {
        self.columns.iter().map(|c| c.name).collect()
    }

    fn index(&self, column: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == column)
    }

    fn ddl(&self) -> String {
        let columns: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                let ty = match c.ty {
                    Text => "VARCHAR",
                    Date => "DATE",
                    Double => "DOUBLE",
                    Int => "INTEGER",
                };
                format!("\"{}\" {ty}", c.name)
            })
            .collect();
        let keys: Vec<&str> = self.columns[..self.key_len].iter().map(|c| c.name).collect();
        let raw = if self.keep_raw { "raw VARCHAR, " } else { "" };
        format!(
            "CREATE TABLE IF NOT EXISTS {} ({}, {raw}source VARCHAR NOT NULL, fetched_at TIMESTAMP NOT NULL, PRIMARY KEY ({}))",
            self.name,
            columns.join(", "),
            keys.join(", ")
        )
    }

    /// Where bulk upserts are staged before one set-based `INSERT OR REPLACE`.
    fn stage_name(&self) -> String {
        format!("_stage_{}", self.name)
    }

    fn select_list(&self) -> String {
        let names: Vec<String> = self.columns.iter().map(|c| format!("\"{}\"", c.name)).collect();
        format!("{}, source, fetched_at", names.join(", "))
    }
}

/// A typed cell, independent of DuckDB's value type.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Text(String),
    Date(NaiveDate),
    Number(f64),
}

impl Cell {
    fn to_duck(&self, ty: ColType) -> DuckValue {
        match self {
            Cell::Null => DuckValue::Null,
            Cell::Number(n) if ty == Int => DuckValue::BigInt(*n as i64),
            Cell::Text(s) => DuckValue::Text(s.clone()),
            Cell::Date(d) => DuckValue::Date32((*d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32),
            Cell::Number(n) => DuckValue::Double(*n),
        }
    }

    fn from_duck(value: DuckValue) -> Cell {
        match value {
            DuckValue::Text(s) => Cell::Text(s),
            DuckValue::Date32(days) => NaiveDate::from_ymd_opt(1970, 1, 1)
                .and_then(|epoch| epoch.checked_add_signed(chrono::Duration::days(days.into())))
                .map_or(Cell::Null, Cell::Date),
            DuckValue::Double(n) => Cell::Number(n),
            DuckValue::Int(n) => Cell::Number(n.into()),
            DuckValue::BigInt(n) => Cell::Number(n as f64),
            _ => Cell::Null,
        }
    }

    /// Converts an upstream JSON value into the column's type; junk becomes Null rather than a wrong number.
    fn from_upstream(row: &Row<'_>, column: &Column) -> Cell {
        match column.ty {
            Text => row.str(column.name).map_or(Cell::Null, |s| Cell::Text(s.to_string())),
            Date => row.str(column.name).and_then(|s| twilight_core::parse_date(s).ok()).map_or(Cell::Null, Cell::Date),
            Double | Int => row.f64(column.name).map_or(Cell::Null, Cell::Number),
        }
    }
}

/// One stored row with its provenance.
#[derive(Debug, Clone)]
pub struct Record {
    pub spec: &'static TableSpec,
    pub cells: Vec<Cell>,
    pub source: String,
    pub fetched_at: DateTime<Utc>,
}

impl Record {
    pub fn cell(&self, column: &str) -> &Cell {
        self.spec.index(column).map_or(&Cell::Null, |i| &self.cells[i])
    }

    pub fn number(&self, column: &str) -> Option<f64> {
        match self.cell(column) {
            Cell::Number(n) if n.is_finite() => Some(*n),
            _ => None,
        }
    }

    pub fn text(&self, column: &str) -> Option<&str> {
        match self.cell(column) {
            Cell::Text(s) => Some(s),
            _ => None,
        }
    }

    pub fn date(&self, column: &str) -> Option<NaiveDate> {
        match self.cell(column) {
            Cell::Date(d) => Some(*d),
            _ => None,
        }
    }
}

pub struct Warehouse {
    writer: Mutex<Connection>,
    /// Only cloned from, so opening a reader never waits for a write in progress.
    origin: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

fn storage(e: duckdb::Error) -> MarketError {
    MarketError::Warehouse(e.to_string())
}

impl Warehouse {
    /// Opens (creating if needed) the warehouse file and its tables.
    pub fn open(path: &Path) -> Result<Warehouse, MarketError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| MarketError::Warehouse(format!("{}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path).map_err(storage)?;
        for spec in TABLES {
            conn.execute_batch(&spec.ddl()).map_err(storage)?;
            conn.execute_batch(&format!("CREATE TABLE IF NOT EXISTS {} AS SELECT * FROM {} LIMIT 0", spec.stage_name(), spec.name))
                .map_err(storage)?;
        }
        let origin = conn.try_clone().map_err(storage)?;
        Ok(Warehouse { writer: Mutex::new(conn), origin: Mutex::new(origin), readers: Mutex::new(Vec::new()) })
    }

    /// Runs `f` on a reader connection, reusing idle ones.
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> duckdb::Result<T>) -> Result<T, MarketError> {
        let idle = self.readers.lock().expect("reader pool").pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.origin.lock().expect("origin").try_clone().map_err(storage)?,
        };
        let result = f(&conn).map_err(storage);
        self.readers.lock().expect("reader pool").push(conn);
        result
    }

    /// Rows of `spec` whose leading key columns equal `key_prefix`, newest first by `order_desc` if given.
    pub fn select(&self, spec: &'static TableSpec, key_prefix: &[Cell], order_desc: Option<&str>) -> Result<Vec<Record>, MarketError> {
        let filter: Vec<String> = spec.columns[..key_prefix.len()].iter().map(|c| format!("\"{}\" = ?", c.name)).collect();
        let mut sql = format!("SELECT {} FROM {}", spec.select_list(), spec.name);
        if !filter.is_empty() {
            sql += &format!(" WHERE {}", filter.join(" AND "));
        }
        if let Some(column) = order_desc {
            sql += &format!(" ORDER BY \"{column}\" DESC");
        }
        let params: Vec<DuckValue> = key_prefix.iter().zip(spec.columns).map(|(cell, c)| cell.to_duck(c.ty)).collect();
        let n = spec.columns.len();
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(duckdb::params_from_iter(params), |row| {
                let mut cells = Vec::with_capacity(n);
                for i in 0..n {
                    cells.push(Cell::from_duck(row.get::<_, DuckValue>(i)?));
                }
                let source: String = row.get(n)?;
                let fetched_at = match row.get::<_, DuckValue>(n + 1)? {
                    DuckValue::Timestamp(unit, v) => timestamp(unit, v),
                    _ => DateTime::<Utc>::UNIX_EPOCH,
                };
                Ok(Record { spec, cells, source, fetched_at })
            })?;
            rows.collect()
        })
    }

    /// Upserts every row of an upstream answer into `spec`, in one transaction on the single writer.
    pub fn upsert(
        &self,
        spec: &'static TableSpec,
        table: &Table,
        source: &str,
        fetched_at: DateTime<Utc>,
    ) -> Result<Vec<Record>, MarketError> {
        let rows = rows_of(spec, table, source, fetched_at);
        let stamp = DuckValue::Timestamp(TimeUnit::Microsecond, fetched_at.timestamp_micros());
        let stage = spec.stage_name();

        // Bulk path: append to a staging table, then one set-based upsert (row-by-row INSERTs of a
        // whole-market day or the 36-year calendar take seconds).
        let mut conn = self.writer.lock().expect("writer");
        let tx = conn.transaction().map_err(storage)?;
        tx.execute_batch(&format!("DELETE FROM {stage}")).map_err(storage)?;
        {
            let mut appender = tx.appender(&stage).map_err(storage)?;
            for (record, raw) in &rows {
                let mut params: Vec<DuckValue> = spec.columns.iter().zip(&record.cells).map(|(c, cell)| cell.to_duck(c.ty)).collect();
                if spec.keep_raw {
                    params.push(raw.clone().map_or(DuckValue::Null, DuckValue::Text));
                }
                params.push(DuckValue::Text(record.source.clone()));
                params.push(stamp.clone());
                appender.append_row(duckdb::appender_params_from_iter(params)).map_err(storage)?;
            }
            appender.flush().map_err(storage)?;
        }
        tx.execute_batch(&format!("INSERT OR REPLACE INTO {} SELECT * FROM {stage}", spec.name)).map_err(storage)?;
        tx.commit().map_err(storage)?;
        Ok(rows.into_iter().map(|(record, _)| record).collect())
    }

    /// Row counts per table, for the deep health check.
    pub fn row_counts(&self) -> Result<Vec<(&'static str, i64)>, MarketError> {
        self.read(|conn| {
            TABLES
                .iter()
                .map(|spec| conn.query_row(&format!("SELECT count(*) FROM {}", spec.name), [], |r| r.get(0)).map(|n| (spec.name, n)))
                .collect()
        })
    }
}

/// An upstream answer as `spec`'s records, without storing them: what an answer is made of when
/// the warehouse cannot take them.
pub fn records(spec: &'static TableSpec, table: &Table, source: &str, fetched_at: DateTime<Utc>) -> Vec<Record> {
    rows_of(spec, table, source, fetched_at).into_iter().map(|(record, _)| record).collect()
}

/// The rows of an upstream answer `spec` keeps (those with every key column), each with its raw
/// JSON when the table keeps that too.
fn rows_of(spec: &'static TableSpec, table: &Table, source: &str, fetched_at: DateTime<Utc>) -> Vec<(Record, Option<String>)> {
    table
        .rows()
        .map(|row| {
            let record = Record {
                spec,
                cells: spec.columns.iter().map(|c| Cell::from_upstream(&row, c)).collect(),
                source: source.to_string(),
                fetched_at,
            };
            (record, spec.keep_raw.then(|| row.to_json().to_string()))
        })
        .filter(|(record, _)| record.cells[..spec.key_len].iter().all(|c| *c != Cell::Null))
        .collect()
}

fn timestamp(unit: TimeUnit, value: i64) -> DateTime<Utc> {
    let micros = match unit {
        TimeUnit::Second => value.saturating_mul(1_000_000),
        TimeUnit::Millisecond => value.saturating_mul(1_000),
        TimeUnit::Microsecond => value,
        TimeUnit::Nanosecond => value / 1_000,
    };
    DateTime::from_timestamp_micros(micros).unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn table(items: serde_json::Value) -> Table {
        Table { fields: DAILY.fields().iter().map(|f| f.to_string()).collect(), items: serde_json::from_value(items).unwrap() }
    }

    #[test]
    fn upsert_then_select_round_trips_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let warehouse = Warehouse::open(&dir.path().join("w.duckdb")).unwrap();
        let at = DateTime::from_timestamp(1_777_000_000, 0).unwrap();
        let rows = json!([
            ["600519.SH", "20260430", 1500.0, 1510.0, 1490.0, 1505.5, 1499.0, 6.5, 0.4336, 20000.0, 3010000.0],
            ["600519.SH", "20260429", 1490.0, 1500.0, 1480.0, 1499.0, 1488.0, 11.0, 0.7392, null, 2990000.0],
            [null, "20260429", 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
        ]);
        let stored = warehouse.upsert(&DAILY, &table(rows), "sandbox:tushare", at).unwrap();
        assert_eq!(stored.len(), 2, "a row without its key is dropped");

        let key = [Cell::Text("600519.SH".into())];
        let found = warehouse.select(&DAILY, &key, Some("trade_date")).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].date("trade_date"), NaiveDate::from_ymd_opt(2026, 4, 30));
        assert_eq!(found[0].number("close"), Some(1505.5));
        assert_eq!(found[1].number("vol"), None);
        assert_eq!(found[0].source, "sandbox:tushare");
        assert_eq!(found[0].fetched_at, at);

        let later = at + chrono::Duration::hours(1);
        let fix = json!([["600519.SH", "20260430", 1500.0, 1510.0, 1490.0, 1506.0, 1499.0, 7.0, 0.467, 20000.0, 3010000.0]]);
        warehouse.upsert(&DAILY, &table(fix), "tushare", later).unwrap();
        let one = warehouse
            .select(&DAILY, &[Cell::Text("600519.SH".into()), Cell::Date(NaiveDate::from_ymd_opt(2026, 4, 30).unwrap())], None)
            .unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!((one[0].number("close"), one[0].source.as_str(), one[0].fetched_at), (Some(1506.0), "tushare", later));
        assert_eq!(warehouse.row_counts().unwrap().iter().find(|(t, _)| *t == "daily").unwrap().1, 2);
    }

    #[test]
    fn integer_and_raw_columns_store() {
        let dir = tempfile::tempdir().unwrap();
        let warehouse = Warehouse::open(&dir.path().join("w.duckdb")).unwrap();
        let cal = Table {
            fields: vec!["exchange".into(), "cal_date".into(), "is_open".into(), "pretrade_date".into()],
            items: serde_json::from_value(json!([["SSE", "20260501", 0, "20260430"], ["SSE", "20260430", 1, "20260429"]])).unwrap(),
        };
        warehouse.upsert(&TRADE_CAL, &cal, "tushare", Utc::now()).unwrap();
        let days = warehouse.select(&TRADE_CAL, &[Cell::Text("SSE".into())], Some("cal_date")).unwrap();
        assert_eq!(days.iter().map(|d| d.number("is_open")).collect::<Vec<_>>(), [Some(0.0), Some(1.0)]);

        let fina = Table {
            fields: vec!["ts_code".into(), "end_date".into(), "ann_date".into(), "eps".into(), "extra_field".into()],
            items: serde_json::from_value(json!([["600519.SH", "20251231", "20260328", 68.64, "kept in raw"]])).unwrap(),
        };
        warehouse.upsert(&FINA_INDICATOR, &fina, "tushare", Utc::now()).unwrap();
        let raw: String = warehouse.read(|c| c.query_row("SELECT raw FROM fina_indicator", [], |r| r.get(0))).unwrap();
        assert!(raw.contains("kept in raw"), "{raw}");
    }
}

//! The DuckDB warehouse: market data on disk, also the cache behind every answer.
//!
//! One writer connection serialises fills; reads use their own connections, so a read never waits for a
//! fill of another key (DuckDB's MVCC gives each reader a consistent snapshot).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, NaiveDate, Utc};
use duckdb::types::{TimeUnit, Value as DuckValue};
use duckdb::Connection;

use twilight_core::{Agreement, TsCode};

use crate::MarketError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    Text,
    Date,
    Double,
    Int,
}

#[derive(Debug, PartialEq)]
pub struct Column {
    pub name: &'static str,
    pub ty: ColType,
}

const fn col(name: &'static str, ty: ColType) -> Column {
    Column { name, ty }
}

/// A warehouse table: its first `key_len` columns identify a row; every table also records `source`
/// (who answered) and `fetched_at` (when), which the cite envelope reports.
#[derive(Debug, PartialEq)]
pub struct TableSpec {
    pub name: &'static str,
    pub columns: &'static [Column],
    pub key_len: usize,
    /// Rows of several sources sit side by side under one key (`source` is part of the primary
    /// key), so their values can be compared; otherwise a row replaces whatever source wrote before.
    pub per_source: bool,
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
    per_source: true,
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
    per_source: false,
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
    per_source: false,
    keep_raw: true,
};

pub const TRADE_CAL: TableSpec = TableSpec {
    name: "trade_cal",
    columns: &[col("exchange", Text), col("cal_date", Date), col("is_open", Int), col("pretrade_date", Date)],
    key_len: 2,
    per_source: false,
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
    per_source: false,
    keep_raw: false,
};

pub const ADJ_FACTOR: TableSpec = TableSpec {
    name: "adj_factor",
    columns: &[col("ts_code", Text), col("trade_date", Date), col("adj_factor", Double)],
    key_len: 2,
    per_source: false,
    keep_raw: false,
};

/// Daily bars of what only Yahoo lists (US, Hong Kong, FX), in the symbol's currency; `vol` in
/// shares.
pub const YAHOO_DAILY: TableSpec = TableSpec {
    name: "yahoo_daily",
    columns: &[
        col("symbol", Text),
        col("trade_date", Date),
        col("open", Double),
        col("high", Double),
        col("low", Double),
        col("close", Double),
        col("pre_close", Double),
        col("change", Double),
        col("pct_chg", Double),
        col("vol", Double),
        col("currency", Text),
        col("name", Text),
    ],
    key_len: 2,
    per_source: false,
    keep_raw: false,
};

/// What a company is, from AKShare (Eastmoney's industry board, CNINFO's profile); both answers kept
/// whole in `raw`.
pub const COMPANY_PROFILE: TableSpec = TableSpec {
    name: "company_profile",
    columns: &[
        col("ts_code", Text),
        col("industry", Text),
        col("csrc_industry", Text),
        col("company_name", Text),
        col("market", Text),
        col("main_business", Text),
        col("website", Text),
    ],
    key_len: 1,
    per_source: false,
    keep_raw: true,
};

pub const TABLES: [&TableSpec; 8] =
    [&DAILY, &DAILY_BASIC, &FINA_INDICATOR, &TRADE_CAL, &STOCK_BASIC, &ADJ_FACTOR, &YAHOO_DAILY, &COMPANY_PROFILE];

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
        let mut keys: Vec<&str> = self.columns[..self.key_len].iter().map(|c| c.name).collect();
        if self.per_source {
            keys.push("source");
        }
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

/// Two sources' values of one field of one day that differ beyond rounding
/// ([`Agreement::TOLERANCE_PCT`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Disagreement {
    pub ts_code: String,
    pub trade_date: NaiveDate,
    pub field: &'static str,
    /// The answering source (Tushare).
    pub source: String,
    pub value: f64,
    pub other_source: String,
    pub other_value: f64,
    /// (other − value) / value, in per cent.
    pub diff_pct: f64,
}

impl Disagreement {
    /// Two sources' (source, value) of `field` of one day, when they disagree.
    pub fn new(
        ts_code: &str,
        trade_date: NaiveDate,
        field: &'static str,
        (source, value): (&str, f64),
        (other_source, other_value): (&str, f64),
    ) -> Option<Disagreement> {
        let agreement = Agreement::between(value, other_source, other_value).filter(|a| !a.matches())?;
        Some(Disagreement {
            ts_code: ts_code.to_string(),
            trade_date,
            field,
            source: source.to_string(),
            value,
            other_source: other_source.to_string(),
            other_value,
            diff_pct: agreement.diff_pct,
        })
    }

    /// `row` and `other` (the same key, another source) on `field`, when they disagree.
    pub fn of(row: &Record, other: &Record, field: &'static str) -> Option<Disagreement> {
        let day = row.date("trade_date")?;
        Disagreement::new(row.text("ts_code")?, day, field, (&row.source, row.number(field)?), (&other.source, other.number(field)?))
    }
}

/// What comparing the sources found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SourceCheck {
    /// (code, day) pairs both Tushare and another source hold.
    pub compared: usize,
    pub disagreements: Vec<Disagreement>,
}

/// The upstream a row's `source` names, whether a simulator played it or not (`sandbox:tdx` → `tdx`).
pub fn source_name(source: &str) -> &str {
    source.strip_prefix("sandbox:").unwrap_or(source)
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
            DuckValue::Date32(_) => date_of(&value).map_or(Cell::Null, Cell::Date),
            DuckValue::Double(n) => Cell::Number(n),
            DuckValue::Int(n) => Cell::Number(n.into()),
            DuckValue::BigInt(n) => Cell::Number(n as f64),
            _ => Cell::Null,
        }
    }
}

/// A value an answer states: a number, or text (an industry, a company name).
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Fact {
    Number(f64),
    Text(String),
}

/// One stored row with its provenance.
#[derive(Debug, Clone)]
pub struct Record {
    pub spec: &'static TableSpec,
    pub cells: Vec<Cell>,
    pub source: String,
    pub fetched_at: DateTime<Utc>,
    /// The whole upstream row as JSON, kept for tables that keep it (`TableSpec::keep_raw`).
    pub raw: Option<String>,
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

    /// The value of `column` as an answer states it (a date as `YYYYMMDD` text).
    pub fn fact(&self, column: &str) -> Option<Fact> {
        match self.cell(column) {
            Cell::Number(n) if n.is_finite() => Some(Fact::Number(*n)),
            Cell::Text(s) => Some(Fact::Text(s.clone())),
            Cell::Date(d) => Some(Fact::Text(twilight_core::compact(*d))),
            _ => None,
        }
    }
}

pub struct Warehouse {
    path: PathBuf,
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
            if spec.per_source && !source_in_key(&conn, spec).map_err(storage)? {
                rekey_by_source(&conn, spec).map_err(storage)?;
            }
            conn.execute_batch(&format!("CREATE TABLE IF NOT EXISTS {} AS SELECT * FROM {} LIMIT 0", spec.stage_name(), spec.name))
                .map_err(storage)?;
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS source_disagreements (ts_code VARCHAR NOT NULL, trade_date DATE NOT NULL, field VARCHAR NOT NULL, \
             source VARCHAR NOT NULL, value DOUBLE, other_source VARCHAR NOT NULL, other_value DOUBLE, diff_pct DOUBLE, \
             detected_at TIMESTAMP NOT NULL, PRIMARY KEY (ts_code, trade_date, field, source, other_source))",
        )
        .map_err(storage)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS backfill_ranges (source VARCHAR NOT NULL, ts_code VARCHAR NOT NULL, since DATE NOT NULL, \
             through DATE NOT NULL, PRIMARY KEY (source, ts_code))",
        )
        .map_err(storage)?;
        // What the scheduled fills stored whole (one row per session), and which codes' whole
        // report history was fetched (a fill's whole-market report of one period is not a history).
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS filled_sessions (trade_date DATE PRIMARY KEY, rows BIGINT NOT NULL, filled_at TIMESTAMP NOT NULL); \
             CREATE TABLE IF NOT EXISTS report_histories (ts_code VARCHAR PRIMARY KEY, fetched_at TIMESTAMP NOT NULL)",
        )
        .map_err(storage)?;
        let origin = conn.try_clone().map_err(storage)?;
        Ok(Warehouse { path: path.to_path_buf(), writer: Mutex::new(conn), origin: Mutex::new(origin), readers: Mutex::new(Vec::new()) })
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
                Ok(Record { spec, cells, source, fetched_at, raw: None })
            })?;
            rows.collect()
        })
    }

    /// Upserts `records` of `spec` in one transaction on the single writer.
    pub fn upsert(&self, spec: &'static TableSpec, records: &[Record]) -> Result<(), MarketError> {
        let mut conn = self.writer.lock().expect("writer");
        let tx = conn.transaction().map_err(storage)?;
        merge(&tx, spec, records).map_err(storage)?;
        tx.commit().map_err(storage)
    }

    /// Per code, the range of days a backfill from `source` has fetched whole.
    pub fn backfilled(&self, source: &str) -> Result<HashMap<String, (NaiveDate, NaiveDate)>, MarketError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT ts_code, since, through FROM backfill_ranges WHERE source = ?")?;
            let rows = stmt.query_map([source], |row| {
                let date = |i| row.get::<_, DuckValue>(i).map(|v| date_of(&v).unwrap_or(NaiveDate::MIN));
                Ok((row.get::<_, String>(0)?, (date(1)?, date(2)?)))
            })?;
            rows.collect()
        })
    }

    /// Stores a backfill's `records` of `code` and widens the range it has fetched whole by
    /// `range`, in one transaction: an interrupted backfill never claims days it did not store.
    pub fn store_backfill(&self, source: &str, code: TsCode, range: (NaiveDate, NaiveDate), records: &[Record]) -> Result<(), MarketError> {
        let day = |d: NaiveDate| Cell::Date(d).to_duck(Date);
        let mut conn = self.writer.lock().expect("writer");
        let tx = conn.transaction().map_err(storage)?;
        merge(&tx, &DAILY, records).map_err(storage)?;
        tx.execute(
            "INSERT INTO backfill_ranges VALUES (?, ?, ?, ?) ON CONFLICT (source, ts_code) DO UPDATE \
             SET since = least(backfill_ranges.since, excluded.since), through = greatest(backfill_ranges.through, excluded.through)",
            duckdb::params![source, code.to_string(), day(range.0), day(range.1)],
        )
        .map_err(storage)?;
        tx.commit().map_err(storage)
    }

    /// Stores a scheduled fill of the session `day` (each table's rows) and records the session as
    /// filled, in one transaction: an interrupted fill never claims a session. Returns the rows.
    pub fn store_session(
        &self,
        day: NaiveDate,
        tables: &[(&'static TableSpec, Vec<Record>)],
        at: DateTime<Utc>,
    ) -> Result<usize, MarketError> {
        let rows: usize = tables.iter().map(|(_, records)| records.len()).sum();
        let mut conn = self.writer.lock().expect("writer");
        let tx = conn.transaction().map_err(storage)?;
        for (spec, records) in tables {
            merge(&tx, spec, records).map_err(storage)?;
        }
        tx.execute(
            "INSERT OR REPLACE INTO filled_sessions VALUES (?, ?, ?)",
            duckdb::params![Cell::Date(day).to_duck(Date), rows as i64, micros(at)],
        )
        .map_err(storage)?;
        tx.commit().map_err(storage)?;
        Ok(rows)
    }

    /// The newest session a scheduled fill stored.
    pub fn last_filled_session(&self) -> Result<Option<NaiveDate>, MarketError> {
        self.read(|conn| conn.query_row("SELECT max(trade_date) FROM filled_sessions", [], |row| row.get::<_, DuckValue>(0)))
            .map(|value| date_of(&value))
    }

    /// Stores `code`'s whole report history as fetched for it, and notes that it was.
    pub fn store_report_history(&self, code: TsCode, records: &[Record], at: DateTime<Utc>) -> Result<(), MarketError> {
        let mut conn = self.writer.lock().expect("writer");
        let tx = conn.transaction().map_err(storage)?;
        merge(&tx, &FINA_INDICATOR, records).map_err(storage)?;
        tx.execute("INSERT OR REPLACE INTO report_histories VALUES (?, ?)", duckdb::params![code.to_string(), micros(at)])
            .map_err(storage)?;
        tx.commit().map_err(storage)
    }

    /// Whether `code`'s whole report history was ever fetched (not only a fill's periods).
    pub fn has_report_history(&self, code: TsCode) -> Result<bool, MarketError> {
        self.read(|conn| {
            conn.query_row("SELECT count(*) > 0 FROM report_histories WHERE ts_code = ?", [code.to_string()], |row| row.get(0))
        })
    }

    /// The `n` codes of largest `total_mv` in `daily_basic` on `day`, largest first; `None` unless
    /// the warehouse holds that day for the whole market (a few rows from single-code requests do
    /// not rank it).
    pub fn largest_by_market_value(&self, day: NaiveDate, n: usize) -> Result<Option<Vec<String>>, MarketError> {
        /// Fewer rows than this on a day means it was never filled whole (the A-share market lists ~5,000).
        const WHOLE_MARKET: i64 = 1_000;
        let day = Cell::Date(day).to_duck(Date);
        self.read(|conn| {
            let rows: i64 = conn.query_row("SELECT count(*) FROM daily_basic WHERE trade_date = ?", [&day], |r| r.get(0))?;
            if rows < WHOLE_MARKET {
                return Ok(None);
            }
            let mut stmt =
                conn.prepare_cached("SELECT ts_code FROM daily_basic WHERE trade_date = ? ORDER BY total_mv DESC NULLS LAST LIMIT ?")?;
            let codes = stmt.query_map(duckdb::params![day, n as i64], |r| r.get::<_, String>(0))?;
            codes.collect::<duckdb::Result<Vec<_>>>().map(Some)
        })
    }

    /// Keeps `found` in `source_disagreements` (one row per code, day, field and pair of sources;
    /// found again, it is replaced).
    pub fn record_disagreements(&self, found: &[Disagreement], at: DateTime<Utc>) -> Result<(), MarketError> {
        let mut conn = self.writer.lock().expect("writer");
        let tx = conn.transaction().map_err(storage)?;
        {
            let mut insert =
                tx.prepare_cached("INSERT OR REPLACE INTO source_disagreements VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)").map_err(storage)?;
            for d in found {
                insert
                    .execute(duckdb::params![
                        d.ts_code,
                        Cell::Date(d.trade_date).to_duck(Date),
                        d.field,
                        d.source,
                        d.value,
                        d.other_source,
                        d.other_value,
                        d.diff_pct,
                        micros(at),
                    ])
                    .map_err(storage)?;
            }
        }
        tx.commit().map_err(storage)
    }

    /// Compares Tushare's close with every other source's for each (code, day) both hold from
    /// `since` on, and records the disagreements.
    pub fn check_sources(&self, since: Option<NaiveDate>) -> Result<SourceCheck, MarketError> {
        let since = Cell::Date(since.unwrap_or(NaiveDate::from_ymd_opt(1990, 1, 1).expect("a valid date"))).to_duck(Date);
        type Pair = (String, NaiveDate, f64, String, f64, String);
        let pairs: Vec<Pair> = self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT t.ts_code, t.trade_date, t.close, t.source, o.close, o.source FROM daily t JOIN daily o \
                 ON o.ts_code = t.ts_code AND o.trade_date = t.trade_date AND o.source <> t.source \
                 WHERE replace(t.source, 'sandbox:', '') = 'tushare' AND replace(o.source, 'sandbox:', '') <> 'tushare' \
                 AND t.close IS NOT NULL AND o.close IS NOT NULL AND t.trade_date >= ? ORDER BY t.ts_code, t.trade_date",
            )?;
            let rows = stmt.query_map([&since], |row| {
                let day = date_of(&row.get(1)?).unwrap_or(NaiveDate::MIN);
                Ok((row.get(0)?, day, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?))
            })?;
            rows.collect()
        })?;
        let disagreements: Vec<Disagreement> = pairs
            .iter()
            .filter_map(|(code, day, close, source, other_close, other_source)| {
                Disagreement::new(code, *day, "close", (source, *close), (other_source, *other_close))
            })
            .collect();
        self.record_disagreements(&disagreements, Utc::now())?;
        Ok(SourceCheck { compared: pairs.len(), disagreements })
    }

    /// Row counts per table, for the deep health check.
    /// The file the warehouse lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A consistent copy of the warehouse at `to`, taken while it serves: every write so far is
    /// checkpointed into the file, which is copied while the writer is held (reads go on; DuckDB
    /// readers never write the file). `to` must not exist.
    pub fn snapshot(&self, to: &Path) -> Result<u64, MarketError> {
        let conn = self.writer.lock().expect("writer");
        conn.execute_batch("CHECKPOINT").map_err(storage)?;
        let copy = || -> std::io::Result<u64> {
            let mut from = std::fs::File::open(&self.path)?;
            let mut into = std::fs::OpenOptions::new().write(true).create_new(true).open(to)?;
            let bytes = std::io::copy(&mut from, &mut into)?;
            into.sync_all()?;
            Ok(bytes)
        };
        copy().map_err(|e| MarketError::Warehouse(format!("snapshot to {}: {e}", to.display())))
    }

    pub fn row_counts(&self) -> Result<Vec<(&'static str, i64)>, MarketError> {
        self.read(|conn| {
            TABLES
                .iter()
                .map(|spec| conn.query_row(&format!("SELECT count(*) FROM {}", spec.name), [], |r| r.get(0)).map(|n| (spec.name, n)))
                .collect()
        })
    }
}

/// Appends `records` to `spec`'s staging table, then one set-based upsert (row-by-row INSERTs of a
/// whole-market day or the 36-year calendar take seconds).
fn merge(tx: &duckdb::Transaction<'_>, spec: &'static TableSpec, records: &[Record]) -> duckdb::Result<()> {
    let stage = spec.stage_name();
    tx.execute_batch(&format!("DELETE FROM {stage}"))?;
    {
        let mut appender = tx.appender(&stage)?;
        for record in records {
            let mut params: Vec<DuckValue> = spec.columns.iter().zip(&record.cells).map(|(c, cell)| cell.to_duck(c.ty)).collect();
            if spec.keep_raw {
                params.push(record.raw.clone().map_or(DuckValue::Null, DuckValue::Text));
            }
            params.push(DuckValue::Text(record.source.clone()));
            params.push(DuckValue::Timestamp(TimeUnit::Microsecond, record.fetched_at.timestamp_micros()));
            appender.append_row(duckdb::appender_params_from_iter(params))?;
        }
        appender.flush()?;
    }
    tx.execute_batch(&format!("INSERT OR REPLACE INTO {} SELECT * FROM {stage}", spec.name))
}

/// Whether `spec`'s stored primary key already includes `source` (warehouses made before sources
/// sat side by side keyed `daily` by code and date alone).
fn source_in_key(conn: &Connection, spec: &TableSpec) -> duckdb::Result<bool> {
    conn.query_row(
        "SELECT count(*) > 0 FROM duckdb_constraints() WHERE table_name = ? AND constraint_type = 'PRIMARY KEY' \
         AND list_contains(constraint_column_names, 'source')",
        [spec.name],
        |row| row.get(0),
    )
}

/// Rebuilds `spec`'s table under its current primary key, keeping every row (DuckDB cannot alter a
/// primary key in place).
fn rekey_by_source(conn: &Connection, spec: &TableSpec) -> duckdb::Result<()> {
    let old = format!("_{}_before_sources", spec.name);
    conn.execute_batch(&format!(
        "BEGIN; ALTER TABLE {name} RENAME TO {old}; {ddl}; INSERT INTO {name} SELECT * FROM {old}; DROP TABLE {old}; COMMIT;",
        name = spec.name,
        ddl = spec.ddl()
    ))
}

fn date_of(value: &DuckValue) -> Option<NaiveDate> {
    match value {
        DuckValue::Date32(days) => NaiveDate::from_ymd_opt(1970, 1, 1)?.checked_add_signed(chrono::Duration::days((*days).into())),
        _ => None,
    }
}

fn micros(at: DateTime<Utc>) -> DuckValue {
    DuckValue::Timestamp(TimeUnit::Microsecond, at.timestamp_micros())
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
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    fn daily(code: &str, date: NaiveDate, close: Option<f64>, source: &str, at: DateTime<Utc>) -> Record {
        let mut cells = vec![Cell::Text(code.into()), Cell::Date(date)];
        cells.extend(DAILY.columns[2..].iter().map(|c| match (c.name, close) {
            ("close", Some(close)) => Cell::Number(close),
            ("close", None) => Cell::Null,
            _ => Cell::Number(1.0),
        }));
        Record { spec: &DAILY, cells, source: source.into(), fetched_at: at, raw: None }
    }

    #[test]
    fn upsert_then_select_round_trips_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let warehouse = Warehouse::open(&dir.path().join("w.duckdb")).unwrap();
        let at = DateTime::from_timestamp(1_777_000_000, 0).unwrap();
        let rows = [
            daily("600519.SH", d(2026, 4, 30), Some(1505.5), "sandbox:tushare", at),
            daily("600519.SH", d(2026, 4, 29), None, "sandbox:tushare", at),
        ];
        warehouse.upsert(&DAILY, &rows).unwrap();

        let key = [Cell::Text("600519.SH".into())];
        let found = warehouse.select(&DAILY, &key, Some("trade_date")).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].date("trade_date"), Some(d(2026, 4, 30)));
        assert_eq!(found[0].number("close"), Some(1505.5));
        assert_eq!(found[1].number("close"), None);
        assert_eq!(found[0].source, "sandbox:tushare");
        assert_eq!(found[0].fetched_at, at);

        let later = at + chrono::Duration::hours(1);
        warehouse.upsert(&DAILY, &[daily("600519.SH", d(2026, 4, 30), Some(1506.0), "sandbox:tushare", later)]).unwrap();
        let one = warehouse.select(&DAILY, &[Cell::Text("600519.SH".into()), Cell::Date(d(2026, 4, 30))], None).unwrap();
        assert_eq!(one.len(), 1, "the same source replaces its row");
        assert_eq!((one[0].number("close"), one[0].fetched_at), (Some(1506.0), later));
        assert_eq!(warehouse.row_counts().unwrap().iter().find(|(t, _)| *t == "daily").unwrap().1, 2);
    }

    #[test]
    fn a_snapshot_taken_while_serving_opens_with_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let warehouse = Warehouse::open(&dir.path().join("w.duckdb")).unwrap();
        let at = Utc::now();
        let rows: Vec<Record> = (1..=28).map(|day| daily("600519.SH", d(2026, 2, day), Some(1500.0 + day as f64), "tushare", at)).collect();
        warehouse.upsert(&DAILY, &rows).unwrap();
        let to = dir.path().join("snapshot.duckdb");
        assert!(warehouse.snapshot(&to).unwrap() > 0);
        assert!(warehouse.snapshot(&to).is_err(), "never over an existing file");
        // The original keeps serving and taking writes; the copy has what was there.
        warehouse.upsert(&DAILY, &[daily("600519.SH", d(2026, 3, 2), Some(1.0), "tushare", at)]).unwrap();
        let copy = Warehouse::open(&to).unwrap();
        assert_eq!(copy.select(&DAILY, &[Cell::Text("600519.SH".into())], None).unwrap().len(), 28);
        assert_eq!(warehouse.select(&DAILY, &[Cell::Text("600519.SH".into())], None).unwrap().len(), 29);
    }

    #[test]
    fn two_sources_of_a_day_sit_side_by_side() {
        let dir = tempfile::tempdir().unwrap();
        let warehouse = Warehouse::open(&dir.path().join("w.duckdb")).unwrap();
        let at = Utc::now();
        let day = d(2026, 4, 30);
        warehouse.upsert(&DAILY, &[daily("600519.SH", day, Some(1505.5), "tushare", at)]).unwrap();
        warehouse
            .upsert(
                &DAILY,
                &[daily("600519.SH", day, Some(1505.6), "tdx", at), daily("600519.SH", d(2026, 4, 29), Some(1499.0), "tdx", at)],
            )
            .unwrap();
        let mut both = warehouse.select(&DAILY, &[Cell::Text("600519.SH".into()), Cell::Date(day)], None).unwrap();
        both.sort_by(|a, b| a.source.cmp(&b.source));
        assert_eq!(
            both.iter().map(|r| (r.source.as_str(), r.number("close"))).collect::<Vec<_>>(),
            [("tdx", Some(1505.6)), ("tushare", Some(1505.5))]
        );
        assert_eq!(both[0].fetched_at, both[1].fetched_at);
    }

    #[test]
    fn backfilled_ranges_widen_with_their_rows() {
        let dir = tempfile::tempdir().unwrap();
        let warehouse = Warehouse::open(&dir.path().join("w.duckdb")).unwrap();
        let code: TsCode = "600519.SH".parse().unwrap();
        let rows = [daily("600519.SH", d(2026, 4, 29), Some(1499.0), "tdx", Utc::now())];
        warehouse.store_backfill("tdx", code, (d(2021, 4, 30), d(2026, 4, 29)), &rows).unwrap();
        warehouse.store_backfill("tdx", code, (d(2026, 4, 29), d(2026, 4, 30)), &[]).unwrap();
        assert_eq!(warehouse.backfilled("tdx").unwrap()["600519.SH"], (d(2021, 4, 30), d(2026, 4, 30)));
        assert!(warehouse.backfilled("tushare").unwrap().is_empty());
        assert_eq!(warehouse.select(&DAILY, &[], None).unwrap().len(), 1);
    }

    /// A warehouse from before sources sat side by side keys `daily` by code and date: opening it
    /// rebuilds that key and keeps every row.
    #[test]
    fn an_older_warehouse_is_rekeyed_by_source() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.duckdb");
        {
            let conn = Connection::open(&path).unwrap();
            let old_ddl = DAILY.ddl().replace(", source)", ")");
            assert_ne!(old_ddl, DAILY.ddl());
            conn.execute_batch(&old_ddl).unwrap();
            conn.execute_batch("INSERT INTO daily (ts_code, trade_date, close, source, fetched_at) VALUES ('600519.SH', DATE '2026-04-30', 1505.5, 'tushare', TIMESTAMP '2026-04-30 09:00:00')").unwrap();
        }
        let warehouse = Warehouse::open(&path).unwrap();
        warehouse.upsert(&DAILY, &[daily("600519.SH", d(2026, 4, 30), Some(1505.6), "tdx", Utc::now())]).unwrap();
        let rows = warehouse.select(&DAILY, &[Cell::Text("600519.SH".into())], None).unwrap();
        assert_eq!(rows.len(), 2, "the old row kept beside the new source's");
        drop(warehouse);
        assert_eq!(Warehouse::open(&path).unwrap().select(&DAILY, &[], None).unwrap().len(), 2, "reopening changes nothing");
    }

    #[test]
    fn integer_and_raw_columns_store() {
        let dir = tempfile::tempdir().unwrap();
        let warehouse = Warehouse::open(&dir.path().join("w.duckdb")).unwrap();
        let at = Utc::now();
        let day = |date: NaiveDate, open: f64| Record {
            spec: &TRADE_CAL,
            cells: vec![Cell::Text("SSE".into()), Cell::Date(date), Cell::Number(open), Cell::Null],
            source: "tushare".into(),
            fetched_at: at,
            raw: None,
        };
        warehouse.upsert(&TRADE_CAL, &[day(d(2026, 5, 1), 0.0), day(d(2026, 4, 30), 1.0)]).unwrap();
        let days = warehouse.select(&TRADE_CAL, &[Cell::Text("SSE".into())], Some("cal_date")).unwrap();
        assert_eq!(days.iter().map(|d| d.number("is_open")).collect::<Vec<_>>(), [Some(0.0), Some(1.0)]);

        let mut cells = vec![Cell::Text("600519.SH".into()), Cell::Date(d(2025, 12, 31))];
        cells.extend(FINA_INDICATOR.columns[2..].iter().map(|_| Cell::Null));
        let report = Record {
            spec: &FINA_INDICATOR,
            cells,
            source: "tushare".into(),
            fetched_at: at,
            raw: Some(r#"{"extra_field":"kept in raw"}"#.into()),
        };
        warehouse.upsert(&FINA_INDICATOR, &[report]).unwrap();
        let raw: String = warehouse.read(|c| c.query_row("SELECT raw FROM fina_indicator", [], |r| r.get(0))).unwrap();
        assert!(raw.contains("kept in raw"), "{raw}");
    }
}

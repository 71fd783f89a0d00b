#![forbid(unsafe_code)]
//! Domain types with no IO, shared by every Twilight Drive crate.

pub mod cite;
pub mod code;
pub mod date;
pub mod token;
pub mod upstream;

pub use cite::{Agreement, Cite};
pub use code::{CodeError, Exchange, Symbol, TsCode};
pub use date::{china_minute, china_today, compact, is_quarter_end, parse_date, DateError};
pub use token::RawToken;

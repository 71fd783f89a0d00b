//! Security codes as users type them, normalised to Tushare's `ts_code`.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// The exchanges whose A-shares we serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Exchange {
    Shanghai,
    Shenzhen,
    Beijing,
}

impl Exchange {
    /// Tushare's suffix: `SH`, `SZ`, `BJ`.
    pub fn suffix(self) -> &'static str {
        match self {
            Exchange::Shanghai => "SH",
            Exchange::Shenzhen => "SZ",
            Exchange::Beijing => "BJ",
        }
    }

    fn from_suffix(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "SH" | "SS" => Some(Exchange::Shanghai),
            "SZ" => Some(Exchange::Shenzhen),
            "BJ" => Some(Exchange::Beijing),
            _ => None,
        }
    }

    /// The exchange a bare six-digit code belongs to, by the CSRC numbering plan.
    fn infer(symbol: &str) -> Option<Self> {
        match symbol.as_bytes() {
            [b'6', ..] | [b'9', b'0', ..] => Some(Exchange::Shanghai),
            [b'0', ..] | [b'3', ..] | [b'2', b'0', ..] => Some(Exchange::Shenzhen),
            [b'4', ..] | [b'8', ..] | [b'9', b'2', ..] => Some(Exchange::Beijing),
            _ => None,
        }
    }
}

/// A normalised A-share code: `600519`, `600519.SH`, `sh600519` and `SH600519` are the same `TsCode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TsCode {
    symbol: [u8; 6],
    exchange: Exchange,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("code is empty")]
    Empty,
    #[error("'{0}' is not a stock code: expected six digits with an optional exchange, like 600519, 600519.SH or sh600519")]
    Malformed(String),
    #[error("'{0}' does not belong to any A-share exchange; add the exchange, like 600519.SH")]
    UnknownExchange(String),
}

impl TsCode {
    /// The six digits, e.g. `600519`.
    pub fn symbol(&self) -> &str {
        // Only ASCII digits are ever stored.
        std::str::from_utf8(&self.symbol).expect("ascii digits")
    }

    pub fn exchange(&self) -> Exchange {
        self.exchange
    }
}

impl FromStr for TsCode {
    type Err = CodeError;

    fn from_str(input: &str) -> Result<Self, CodeError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(CodeError::Empty);
        }
        let malformed = || CodeError::Malformed(s.to_string());
        let (symbol, exchange) = if let Some((digits, suffix)) = s.split_once('.') {
            (digits, Some(Exchange::from_suffix(suffix).ok_or_else(malformed)?))
        } else if s.len() == 8 && s.is_char_boundary(2) {
            match Exchange::from_suffix(&s[..2]) {
                Some(exchange) => (&s[2..], Some(exchange)),
                None => return Err(malformed()),
            }
        } else {
            (s, None)
        };
        if symbol.len() != 6 || !symbol.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        let exchange = match exchange {
            Some(exchange) => exchange,
            None => Exchange::infer(symbol).ok_or_else(|| CodeError::UnknownExchange(s.to_string()))?,
        };
        let mut digits = [0u8; 6];
        digits.copy_from_slice(symbol.as_bytes());
        Ok(TsCode { symbol: digits, exchange })
    }
}

impl fmt::Display for TsCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.symbol(), self.exchange.suffix())
    }
}

impl Serialize for TsCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// What a code names, and so which source serves it: an A-share (Tushare, TDX) or a symbol only
/// Yahoo Finance lists (US tickers and ADRs like `AAPL`, Hong Kong like `0700.HK`, FX like
/// `USDCNY=X`). The one symbol table: `600519.SH` = `sh600519` = `600519.SS`; `0700.HK` = `00700`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Symbol {
    AShare(TsCode),
    Yahoo(String),
}

impl Symbol {
    /// Yahoo's spelling: `600519.SS` for Shanghai, the code itself for the rest.
    pub fn yahoo(&self) -> String {
        match self {
            Symbol::AShare(code) if code.exchange() == Exchange::Shanghai => format!("{}.SS", code.symbol()),
            Symbol::AShare(code) => code.to_string(),
            Symbol::Yahoo(symbol) => symbol.clone(),
        }
    }
}

impl FromStr for Symbol {
    type Err = CodeError;

    /// A-share spellings first; else a Hong Kong code (`00700`, `700.HK`) or a Yahoo symbol (letters
    /// and digits with `.`, `=`, `^`, `-`, at least one letter, up to 16 characters), upper-cased.
    fn from_str(input: &str) -> Result<Self, CodeError> {
        let a_share = match input.parse::<TsCode>() {
            Ok(code) => return Ok(Symbol::AShare(code)),
            Err(error) => error,
        };
        let s = input.trim().to_ascii_uppercase();
        // Hong Kong's codes are five digits with leading zeros (00700, 09988).
        if s.len() == 5 && s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(Symbol::Yahoo(hong_kong(&s)));
        }
        if let Some(digits) = s.strip_suffix(".HK").filter(|d| !d.is_empty() && d.len() <= 5 && d.bytes().all(|b| b.is_ascii_digit())) {
            return Ok(Symbol::Yahoo(hong_kong(digits)));
        }
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b".=^-".contains(&b);
        if s.len() <= 16 && s.bytes().all(allowed) && s.bytes().any(|b| b.is_ascii_alphabetic()) && !s.contains("..") {
            return Ok(Symbol::Yahoo(s));
        }
        Err(a_share)
    }
}

/// Yahoo's Hong Kong spelling: four digits at least, `.HK`.
fn hong_kong(digits: &str) -> String {
    let n: u32 = digits.parse().expect("digits");
    format!("{n:04}.HK")
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Symbol::AShare(code) => code.fmt(f),
            Symbol::Yahoo(symbol) => f.write_str(symbol),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_symbol_table_for_every_source() {
        let symbol = |s: &str| s.parse::<Symbol>().unwrap();
        assert_eq!(symbol("600519.SS"), Symbol::AShare("600519.SH".parse().unwrap()));
        assert_eq!(symbol("sh600519").yahoo(), "600519.SS");
        assert_eq!(symbol("000001").yahoo(), "000001.SZ");
        for hk in ["0700.HK", "700.hk", "00700"] {
            assert_eq!(symbol(hk), Symbol::Yahoo("0700.HK".into()), "{hk}");
        }
        assert_eq!(symbol("aapl"), Symbol::Yahoo("AAPL".into()));
        assert_eq!(symbol("USDCNY=X").to_string(), "USDCNY=X");
        assert_eq!(symbol("BRK-B"), Symbol::Yahoo("BRK-B".into()));
        for bad in ["", "60051", "茅台", "a b", "1234567", "AAAAAAAAAAAAAAAAA", "A..B"] {
            assert!(bad.parse::<Symbol>().is_err(), "{bad}");
        }
    }

    fn code(s: &str) -> String {
        s.parse::<TsCode>().unwrap().to_string()
    }

    #[test]
    fn spellings_of_one_stock_normalise_alike() {
        for s in ["600519", "600519.SH", "600519.sh", "sh600519", "SH600519", " 600519.SS "] {
            assert_eq!(code(s), "600519.SH", "{s}");
        }
        assert_eq!(code("000001"), "000001.SZ");
        assert_eq!(code("sz000001"), "000001.SZ");
        assert_eq!(code("300750"), "300750.SZ");
        assert_eq!(code("688981"), "688981.SH");
        assert_eq!(code("430047"), "430047.BJ");
        assert_eq!(code("920001"), "920001.BJ");
    }

    #[test]
    fn malformed_codes_are_rejected_with_a_reason() {
        assert_eq!("".parse::<TsCode>(), Err(CodeError::Empty));
        for s in ["60051", "6005190", "abcdef", "600519.XX", "xx600519", "600519.", "茅台", "60０519"] {
            assert!(matches!(s.parse::<TsCode>(), Err(CodeError::Malformed(_))), "{s}");
        }
        assert!(matches!("100000".parse::<TsCode>(), Err(CodeError::UnknownExchange(_))));
    }
}

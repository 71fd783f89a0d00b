//! The TDX quote-server wire format (`shared/protocols/tdx.md`): request and response framing, zlib
//! bodies, the varint price and f32 volume encodings, and the bodies of the commands we use.
//!
//! Both directions live here: the client encodes requests and decodes answers, and the sandbox's
//! simulated server does the reverse with the same functions. Each side is also checked on its own
//! against bytes from outside our code (pytdx's fixed packets and a captured real-server answer in
//! this module's tests; pytdx parsing our server's bytes in `tests/pytdx.rs`), so a shared mistake
//! cannot hide.

use std::io::Read;

use chrono::{NaiveDate, NaiveDateTime};
use flate2::read::ZlibDecoder;

use crate::error::TdxError;

/// First word of every server answer.
pub const RESPONSE_MAGIC: u32 = 0x0074_cbb1;
/// Server answer header: magic u32 · 0x0c · seq u32 · 0x00 · cmd u16 · zipsize u16 · unzipsize u16.
pub const RESPONSE_HEADER_LEN: usize = 16;
/// Client request header before the command word: 0x0c · seq u32 · 0x01 · pkglen u16 · pkglen u16.
pub const REQUEST_HEADER_LEN: usize = 10;
/// At most this many bars come back per request; longer histories are paged with `start`.
pub const MAX_BARS_PER_REQUEST: u16 = 800;
/// At most this many securities come back per list page.
pub const SECURITIES_PER_PAGE: u16 = 1000;
/// Bytes per security in a list page (`<6sH8s4sBI4s`).
const SECURITY_LEN: usize = 29;
/// Bytes per xdxr event after its 7-byte market and code.
const XDXR_EVENT_LEN: usize = 29;

/// Command words.
pub mod cmd {
    /// The first two setup packets.
    pub const SETUP: u16 = 0x000d;
    /// The third setup packet (a client description).
    pub const SETUP_INFO: u16 = 0x0fdb;
    pub const SECURITY_COUNT: u16 = 0x044e;
    pub const SECURITY_LIST: u16 = 0x0450;
    pub const BARS: u16 = 0x052d;
    pub const XDXR: u16 = 0x000f;
}

/// A market on the quote server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Market {
    Shenzhen = 0,
    Shanghai = 1,
}

impl Market {
    pub fn from_u16(n: u16) -> Option<Market> {
        match n {
            0 => Some(Market::Shenzhen),
            1 => Some(Market::Shanghai),
            _ => None,
        }
    }
}

/// Bar periods (`category`). Days and longer carry a YYYYMMDD date; intraday bars a packed date and
/// minute of the day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Min5 = 0,
    Min15 = 1,
    Min30 = 2,
    Hour = 3,
    Day = 4,
    Week = 5,
    Month = 6,
    Min1 = 7,
    Min1Alt = 8,
    DayAlt = 9,
    Quarter = 10,
    Year = 11,
}

impl Period {
    pub fn from_u16(n: u16) -> Option<Period> {
        use Period::*;
        [Min5, Min15, Min30, Hour, Day, Week, Month, Min1, Min1Alt, DayAlt, Quarter, Year].into_iter().find(|p| *p as u16 == n)
    }

    fn intraday(self) -> bool {
        matches!(self, Period::Min5 | Period::Min15 | Period::Min30 | Period::Hour | Period::Min1 | Period::Min1Alt)
    }
}

/// The setup packets pytdx (and the official client) send on connect, each answered once.
pub fn setup_packets() -> [Vec<u8>; 3] {
    const CLIENT_INFO: [u8; 30] = [
        0xd5, 0xd0, 0xc9, 0xcc, 0xd6, 0xa4, 0xa8, 0xaf, 0x00, 0x00, 0x00, 0x8f, 0xc2, 0x25, 0x40, 0x13, 0x00, 0x00, 0xd5, 0x00, 0xc9, 0xcc,
        0xbd, 0xf0, 0xd7, 0xea, 0x00, 0x00, 0x00, 0x02,
    ];
    [
        request(0x0093_1802, cmd::SETUP, &[0x01]),
        request(0x0094_1802, cmd::SETUP, &[0x02]),
        request(0x0099_1803, cmd::SETUP_INFO, &CLIENT_INFO),
    ]
}

/// One request: header, command word, body.
pub fn request(seq: u32, command: u16, body: &[u8]) -> Vec<u8> {
    let len = u16::try_from(body.len() + 2).expect("request bodies are small");
    let mut out = Vec::with_capacity(REQUEST_HEADER_LEN + 2 + body.len());
    out.push(0x0c);
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(0x01);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&command.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// A request header as the server reads it: the sequence number to echo and how many bytes follow
/// (the command word and the body).
pub fn parse_request_header(header: &[u8; REQUEST_HEADER_LEN]) -> Result<(u32, u16), TdxError> {
    let len = u16::from_le_bytes([header[6], header[7]]);
    if header[0] != 0x0c || header[5] != 0x01 || len != u16::from_le_bytes([header[8], header[9]]) || len < 2 {
        return Err(TdxError::protocol(format!("not a request header: {header:02x?}")));
    }
    Ok((u32::from_le_bytes([header[1], header[2], header[3], header[4]]), len))
}

/// A server answer's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHeader {
    pub seq: u32,
    pub command: u16,
    pub zipped_len: u16,
    pub body_len: u16,
}

impl ResponseHeader {
    pub fn parse(bytes: &[u8; RESPONSE_HEADER_LEN]) -> Result<ResponseHeader, TdxError> {
        let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
        let magic = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if magic != RESPONSE_MAGIC || bytes[4] != 0x0c {
            return Err(TdxError::protocol(format!("not an answer header: {bytes:02x?}")));
        }
        let header = ResponseHeader {
            seq: u32::from_le_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]),
            command: u16_at(10),
            zipped_len: u16_at(12),
            body_len: u16_at(14),
        };
        if header.zipped_len == 0 || header.body_len == 0 {
            return Err(TdxError::protocol("an empty answer body"));
        }
        Ok(header)
    }

    /// The body as sent (`zipped_len` bytes) → the body to parse: inflated when the sizes differ.
    pub fn unpack(&self, raw: &[u8]) -> Result<Vec<u8>, TdxError> {
        if self.zipped_len == self.body_len {
            return Ok(raw.to_vec());
        }
        let mut body = Vec::with_capacity(usize::from(self.body_len));
        ZlibDecoder::new(raw).read_to_end(&mut body).map_err(|e| TdxError::protocol(format!("zlib body: {e}")))?;
        if body.len() != usize::from(self.body_len) {
            return Err(TdxError::protocol(format!("body inflated to {} bytes, header said {}", body.len(), self.body_len)));
        }
        Ok(body)
    }
}

/// One answer, header and body, zlib-compressed when that makes it smaller (as servers do for
/// anything but tiny bodies).
pub fn response(seq: u32, command: u16, body: &[u8]) -> Vec<u8> {
    assert!(!body.is_empty() && body.len() <= usize::from(u16::MAX), "an answer body is 1..=65535 bytes");
    let zipped = {
        use std::io::Write;
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(body).expect("writing to memory");
        encoder.finish().expect("writing to memory")
    };
    // Equal sizes would read as "stored": send the body stored whenever zipping does not shrink it.
    let sent: &[u8] = if zipped.len() < body.len() { &zipped } else { body };
    let mut out = Vec::with_capacity(RESPONSE_HEADER_LEN + sent.len());
    out.extend_from_slice(&RESPONSE_MAGIC.to_le_bytes());
    out.push(0x0c);
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(0x00);
    out.extend_from_slice(&command.to_le_bytes());
    out.extend_from_slice(&(sent.len() as u16).to_le_bytes());
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend_from_slice(sent);
    out
}

/// A cursor over an answer body that fails with a protocol error instead of panicking.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], TdxError> {
        let end = self.pos.checked_add(n).filter(|end| *end <= self.buf.len());
        let end =
            end.ok_or_else(|| TdxError::protocol(format!("answer ends at byte {} of a {}-byte field at {}", self.buf.len(), n, self.pos)))?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], TdxError> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    fn u8(&mut self) -> Result<u8, TdxError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, TdxError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, TdxError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn f32(&mut self) -> Result<f32, TdxError> {
        Ok(f32::from_le_bytes(self.array()?))
    }

    /// A varint price: first byte bit 7 = more bytes follow, bit 6 = negative, low 6 bits; then 7
    /// bits per byte, least significant first.
    fn price(&mut self) -> Result<i64, TdxError> {
        let first = self.u8()?;
        let mut value = i64::from(first & 0x3f);
        let mut shift = 6;
        let mut byte = first;
        while byte & 0x80 != 0 {
            if shift > 55 {
                return Err(TdxError::protocol("a price varint longer than 64 bits"));
            }
            byte = self.u8()?;
            value |= i64::from(byte & 0x7f) << shift;
            shift += 7;
        }
        Ok(if first & 0x40 != 0 { -value } else { value })
    }

    fn finish(&self) -> Result<(), TdxError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            extra => Err(TdxError::protocol(format!("{extra} unread bytes after the answer"))),
        }
    }
}

/// Appends `value` as a varint price.
pub fn put_price(out: &mut Vec<u8>, value: i64) {
    let negative = value < 0;
    let mut rest = value.unsigned_abs();
    let mut first = (rest & 0x3f) as u8 | if negative { 0x40 } else { 0 };
    rest >>= 6;
    if rest != 0 {
        first |= 0x80;
    }
    out.push(first);
    while rest != 0 {
        let mut byte = (rest & 0x7f) as u8;
        rest >>= 7;
        if rest != 0 {
            byte |= 0x80;
        }
        out.push(byte);
    }
}

/// A price in thousandths of a yuan, as the server counts them.
pub fn yuan(milli: i64) -> f64 {
    milli as f64 / 1000.0
}

// ---------------------------------------------------------------- security count

pub fn security_count_request(market: Market) -> Vec<u8> {
    let mut body = (market as u16).to_le_bytes().to_vec();
    body.extend_from_slice(&[0x75, 0xc7, 0x33, 0x01]);
    body
}

pub fn parse_security_count_request(body: &[u8]) -> Result<Market, TdxError> {
    let mut r = Reader::new(body);
    market(r.u16()?)
}

pub fn security_count(count: u16) -> Vec<u8> {
    count.to_le_bytes().to_vec()
}

pub fn parse_security_count(body: &[u8]) -> Result<u16, TdxError> {
    Reader::new(body).u16()
}

fn market(n: u16) -> Result<Market, TdxError> {
    Market::from_u16(n).ok_or_else(|| TdxError::protocol(format!("unknown market {n}")))
}

// ---------------------------------------------------------------- security list

/// One listed security as a list page describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Security {
    pub code: String,
    /// Shares per lot as the server counts volume.
    pub volunit: u16,
    /// GBK on the wire, at most 8 bytes (longer names are cut).
    pub name: String,
    pub decimal_point: u8,
    pub pre_close: f32,
}

pub fn security_list_request(market: Market, start: u16) -> Vec<u8> {
    [(market as u16).to_le_bytes(), start.to_le_bytes()].concat()
}

pub fn parse_security_list_request(body: &[u8]) -> Result<(Market, u16), TdxError> {
    let mut r = Reader::new(body);
    Ok((market(r.u16()?)?, r.u16()?))
}

pub fn security_list(securities: &[Security]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + securities.len() * SECURITY_LEN);
    out.extend_from_slice(&(securities.len() as u16).to_le_bytes());
    for s in securities {
        out.extend_from_slice(&code_bytes(&s.code));
        out.extend_from_slice(&s.volunit.to_le_bytes());
        out.extend_from_slice(&gbk_name(&s.name));
        out.extend_from_slice(&[0; 4]);
        out.push(s.decimal_point);
        out.extend_from_slice(&s.pre_close.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
    }
    out
}

pub fn parse_security_list(body: &[u8]) -> Result<Vec<Security>, TdxError> {
    let mut r = Reader::new(body);
    let count = r.u16()?;
    let securities = (0..count)
        .map(|_| {
            let code = ascii(r.take(6)?)?;
            let volunit = r.u16()?;
            let name_bytes = r.take(8)?;
            let end = name_bytes.iter().position(|b| *b == 0).unwrap_or(name_bytes.len());
            let (name, _, _) = encoding_rs::GBK.decode(&name_bytes[..end]);
            r.take(4)?;
            let decimal_point = r.u8()?;
            let pre_close = r.f32()?;
            r.take(4)?;
            Ok(Security { code, volunit, name: name.into_owned(), decimal_point, pre_close })
        })
        .collect::<Result<_, TdxError>>()?;
    r.finish()?;
    Ok(securities)
}

/// A name in GBK, cut at a character boundary to 8 bytes and NUL-padded.
fn gbk_name(name: &str) -> [u8; 8] {
    let mut out = [0u8; 8];
    let mut len = 0;
    let mut utf8 = [0u8; 4];
    for ch in name.chars() {
        let (bytes, _, _) = encoding_rs::GBK.encode(ch.encode_utf8(&mut utf8));
        if len + bytes.len() > out.len() {
            break;
        }
        out[len..len + bytes.len()].copy_from_slice(&bytes);
        len += bytes.len();
    }
    out
}

fn code_bytes(code: &str) -> [u8; 6] {
    code.as_bytes().try_into().expect("a six-digit code")
}

fn ascii(bytes: &[u8]) -> Result<String, TdxError> {
    std::str::from_utf8(bytes)
        .ok()
        .filter(|s| s.is_ascii())
        .map(str::to_string)
        .ok_or_else(|| TdxError::protocol(format!("a code that is not ASCII: {bytes:02x?}")))
}

// ---------------------------------------------------------------- bars

/// What a bars request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BarsQuery {
    pub market: Market,
    pub code: String,
    pub period: Period,
    /// Bars back from the newest (0 = the newest `count`).
    pub start: u16,
    pub count: u16,
}

/// One bar. Prices in thousandths of a yuan; volume in lots, amount in yuan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bar {
    pub time: NaiveDateTime,
    pub open: i64,
    pub close: i64,
    pub high: i64,
    pub low: i64,
    pub vol: f32,
    pub amount: f32,
}

/// Six ASCII digits: what a TDX code is.
pub fn valid_code(code: &str) -> bool {
    code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit())
}

pub fn bars_request(q: &BarsQuery) -> Vec<u8> {
    let mut body = Vec::with_capacity(26);
    body.extend_from_slice(&(q.market as u16).to_le_bytes());
    body.extend_from_slice(&code_bytes(&q.code));
    body.extend_from_slice(&(q.period as u16).to_le_bytes());
    body.extend_from_slice(&1u16.to_le_bytes());
    body.extend_from_slice(&q.start.to_le_bytes());
    body.extend_from_slice(&q.count.to_le_bytes());
    body.extend_from_slice(&[0; 10]);
    body
}

pub fn parse_bars_request(body: &[u8]) -> Result<BarsQuery, TdxError> {
    let mut r = Reader::new(body);
    let market = market(r.u16()?)?;
    let code = ascii(r.take(6)?)?;
    let period = r.u16()?;
    let period = Period::from_u16(period).ok_or_else(|| TdxError::protocol(format!("unknown bar category {period}")))?;
    r.u16()?;
    let (start, count) = (r.u16()?, r.u16()?);
    r.take(10)?;
    r.finish()?;
    Ok(BarsQuery { market, code, period, start, count })
}

/// Bars, oldest first: each open is a delta from the previous close (the first from zero), close,
/// high and low deltas from their open.
pub fn bars(period: Period, bars: &[Bar]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + bars.len() * 24);
    out.extend_from_slice(&(bars.len() as u16).to_le_bytes());
    let mut previous_close = 0;
    for bar in bars {
        put_time(&mut out, period, bar.time);
        put_price(&mut out, bar.open - previous_close);
        put_price(&mut out, bar.close - bar.open);
        put_price(&mut out, bar.high - bar.open);
        put_price(&mut out, bar.low - bar.open);
        out.extend_from_slice(&bar.vol.to_le_bytes());
        out.extend_from_slice(&bar.amount.to_le_bytes());
        previous_close = bar.close;
    }
    out
}

pub fn parse_bars(period: Period, body: &[u8]) -> Result<Vec<Bar>, TdxError> {
    let mut r = Reader::new(body);
    let count = r.u16()?;
    let mut previous_close = 0;
    let bars = (0..count)
        .map(|_| {
            let time = time(&mut r, period)?;
            let open = previous_close + r.price()?;
            let (close, high, low) = (open + r.price()?, open + r.price()?, open + r.price()?);
            let (vol, amount) = (r.f32()?, r.f32()?);
            previous_close = close;
            Ok(Bar { time, open, close, high, low, vol, amount })
        })
        .collect::<Result<_, TdxError>>()?;
    r.finish()?;
    Ok(bars)
}

/// Day and longer bars: u32 YYYYMMDD (at 15:00). Intraday: u16 with (year − 2004) << 11 and
/// month · 100 + day below, then u16 minutes of the day.
fn put_time(out: &mut Vec<u8>, period: Period, time: NaiveDateTime) {
    use chrono::{Datelike, Timelike};
    if period.intraday() {
        let packed = ((time.year() - 2004) as u16) << 11 | (time.month() * 100 + time.day()) as u16;
        out.extend_from_slice(&packed.to_le_bytes());
        out.extend_from_slice(&((time.hour() * 60 + time.minute()) as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(time.year() as u32 * 10_000 + time.month() * 100 + time.day()).to_le_bytes());
    }
}

fn time(r: &mut Reader, period: Period) -> Result<NaiveDateTime, TdxError> {
    let (date, minutes) = if period.intraday() {
        let packed = r.u16()?;
        let minutes = r.u16()?;
        let md = u32::from(packed % 2048);
        (NaiveDate::from_ymd_opt(i32::from(packed >> 11) + 2004, md / 100, md % 100), u32::from(minutes))
    } else {
        let n = r.u32()?;
        (date_of(n), 15 * 60)
    };
    date.and_then(|d| d.and_hms_opt(minutes / 60, minutes % 60, 0)).ok_or_else(|| TdxError::protocol("a bar with an impossible date"))
}

fn date_of(yyyymmdd: u32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt((yyyymmdd / 10_000) as i32, yyyymmdd / 100 % 100, yyyymmdd % 100)
}

// ---------------------------------------------------------------- xdxr

/// A corporate action (除权除息 and share changes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct XdxrEvent {
    pub date: NaiveDate,
    /// 1 除权除息, 2–10 share changes, 11–12 consolidations, 13–14 warrants (pytdx's table).
    pub category: u8,
    pub detail: XdxrDetail,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum XdxrDetail {
    /// Per 10 shares: cash (yuan), rights issue price, bonus shares, rights shares.
    Dividend {
        cash: f32,
        rights_price: f32,
        bonus_shares: f32,
        rights_shares: f32,
    },
    /// 万股, before and after.
    ShareChange {
        float_before: f32,
        total_before: f32,
        float_after: f32,
        total_after: f32,
    },
    Consolidation {
        ratio: f32,
    },
    Warrant {
        strike: f32,
        per_10: f32,
    },
}

pub fn xdxr_request(market: Market, code: &str) -> Vec<u8> {
    let mut body = vec![0x01, 0x00, market as u8];
    body.extend_from_slice(&code_bytes(code));
    body
}

pub fn parse_xdxr_request(body: &[u8]) -> Result<(Market, String), TdxError> {
    let mut r = Reader::new(body);
    r.u16()?;
    let market = market(u16::from(r.u8()?))?;
    let code = ascii(r.take(6)?)?;
    r.finish()?;
    Ok((market, code))
}

/// The security's market and code (after a count of one), the event count, then each event with
/// market and code again, a pad byte, the date, the category and four 4-byte fields.
pub fn xdxr(market: Market, code: &str, events: &[XdxrEvent]) -> Vec<u8> {
    let mut out = Vec::with_capacity(11 + events.len() * XDXR_EVENT_LEN);
    out.extend_from_slice(&[0x01, 0x00, market as u8]);
    out.extend_from_slice(&code_bytes(code));
    out.extend_from_slice(&(events.len() as u16).to_le_bytes());
    for event in events {
        out.push(market as u8);
        out.extend_from_slice(&code_bytes(code));
        out.push(0);
        put_time(&mut out, Period::Day, event.date.and_hms_opt(15, 0, 0).expect("a valid time"));
        out.push(event.category);
        let fields = match event.detail {
            XdxrDetail::Dividend { cash, rights_price, bonus_shares, rights_shares } => {
                [cash, rights_price, bonus_shares, rights_shares].map(f32::to_bits)
            }
            XdxrDetail::ShareChange { float_before, total_before, float_after, total_after } => {
                [float_before, total_before, float_after, total_after].map(f32::to_bits)
            }
            XdxrDetail::Consolidation { ratio } => [0, 0, ratio.to_bits(), 0],
            XdxrDetail::Warrant { strike, per_10 } => [strike.to_bits(), 0, per_10.to_bits(), 0],
        };
        fields.iter().for_each(|f| out.extend_from_slice(&f.to_le_bytes()));
    }
    out
}

pub fn parse_xdxr(body: &[u8]) -> Result<Vec<XdxrEvent>, TdxError> {
    // A security with no events may be answered by a body shorter than the count.
    if body.len() < 11 {
        return Ok(Vec::new());
    }
    let mut r = Reader::new(body);
    r.take(9)?;
    let count = r.u16()?;
    let events = (0..count)
        .map(|_| {
            r.take(8)?;
            let n = r.u32()?;
            let date = date_of(n).ok_or_else(|| TdxError::protocol(format!("an xdxr event dated {n}")))?;
            let category = r.u8()?;
            let fields = [r.f32()?, r.f32()?, r.f32()?, r.f32()?];
            let detail = match category {
                1 => XdxrDetail::Dividend { cash: fields[0], rights_price: fields[1], bonus_shares: fields[2], rights_shares: fields[3] },
                11 | 12 => XdxrDetail::Consolidation { ratio: fields[2] },
                13 | 14 => XdxrDetail::Warrant { strike: fields[0], per_10: fields[2] },
                _ => XdxrDetail::ShareChange {
                    float_before: fields[0],
                    total_before: fields[1],
                    float_after: fields[2],
                    total_after: fields[3],
                },
            };
            Ok(XdxrEvent { date, category, detail })
        })
        .collect::<Result<_, TdxError>>()?;
    r.finish()?;
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let digits: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..digits.len()).step_by(2).map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn setup_packets_are_pytdx_s_bytes() {
        let [one, two, three] = setup_packets();
        assert_eq!(one, hex("0c 02 18 93 00 01 03 00 03 00 0d 00 01"));
        assert_eq!(two, hex("0c 02 18 94 00 01 03 00 03 00 0d 00 02"));
        assert_eq!(
            three,
            hex("0c 03 18 99 00 01 20 00 20 00 db 0f d5 d0 c9 cc d6 a4 a8 af 00 00 00 8f c2 25 40 13 00 00 d5 00 c9 cc bd f0 d7 ea 00 00 00 02")
        );
    }

    /// pytdx's documented packets: `get_security_count` for Shenzhen, a bars request for 000001
    /// (category 9, 10 bars), an xdxr request.
    #[test]
    fn requests_are_pytdx_s_bytes() {
        assert_eq!(
            request(0x006c_180c, cmd::SECURITY_COUNT, &security_count_request(Market::Shenzhen)),
            hex("0c 0c 18 6c 00 01 08 00 08 00 4e 04 00 00 75 c7 33 01")
        );
        let bars = BarsQuery { market: Market::Shenzhen, code: "000001".into(), period: Period::DayAlt, start: 0, count: 10 };
        assert_eq!(
            request(0x0164_0801, cmd::BARS, &bars_request(&bars)),
            hex("0c01086401011c001c002d0500003030303030310900010000000a0000000000000000000000")
        );
        assert_eq!(
            request(0x0076_181f, cmd::XDXR, &xdxr_request(Market::Shanghai, "600381")),
            hex("0c 1f 18 76 00 01 0b 00 0b 00 0f 00 01 00 01 36 30 30 33 38 31")
        );
    }

    /// The real-server answer captured in pytdx's `get_security_bars.py`: 000001's last 10 daily bars.
    #[test]
    fn a_captured_bars_answer_decodes() {
        let answer = hex(
            "b1cb74000c01086401002d05aa00aa000a006ec73301b28c011e3254a081ad4816d6984d6fc7330154ae0182024ab0a51d4978090c4e70c733015414285e8003bb488b59a64d71c73301140086015ec059274945cb154e74c73301006828724060f648ae0edc4d75c73301000a1e7c40f6da48a37dc24d76c7330100680ad0018052b748ad68a24d77c7330100680072a0f0a448f8b9914d78c733010054285ee0a48b48c294764d7bc733010aa401b8014a001def4874abd44d",
        );
        let header = ResponseHeader::parse(answer[..16].try_into().unwrap()).unwrap();
        assert_eq!(header, ResponseHeader { seq: 0x0164_0801, command: cmd::BARS, zipped_len: 0xaa, body_len: 0xaa });
        let body = header.unpack(&answer[16..]).unwrap();
        let bars = parse_bars(Period::DayAlt, &body).unwrap();
        assert_eq!(bars.len(), 10);
        let first = bars[0];
        assert_eq!(first.time.date(), NaiveDate::from_ymd_opt(2017, 6, 6).unwrap());
        assert_eq!((first.open, first.close, first.high, first.low), (9_010, 9_040, 9_060, 8_990));
        assert_eq!((first.vol, first.amount), (355_341.0, 320_520_896.0));
        assert!(bars.windows(2).all(|w| w[0].time < w[1].time), "oldest first");
        // Re-encoding the decoded bars gives the server's bytes back.
        assert_eq!(super::bars(Period::DayAlt, &bars), body);
    }

    #[test]
    fn prices_round_trip_through_the_varint() {
        for v in [0, 1, -1, 63, -63, 64, -64, 8_191, 8_192, 1_000_000, -1_000_000, 1_234_567_890, i64::from(i32::MAX)] {
            let mut out = Vec::new();
            put_price(&mut out, v);
            let mut r = Reader::new(&out);
            assert_eq!(r.price().unwrap(), v, "{v}: {out:02x?}");
            r.finish().unwrap();
        }
        let mut out = Vec::new();
        put_price(&mut out, 63);
        assert_eq!(out, [0x3f], "six bits fit the first byte");
        out.clear();
        put_price(&mut out, -64);
        assert_eq!(out, [0xc0, 0x01]);
    }

    #[test]
    fn answers_round_trip_zipped_or_stored() {
        for body in [vec![7u8; 2], vec![1u8; 5_000]] {
            let bytes = response(9, cmd::SECURITY_LIST, &body);
            let header = ResponseHeader::parse(bytes[..16].try_into().unwrap()).unwrap();
            assert_eq!((header.seq, header.command, usize::from(header.body_len)), (9, cmd::SECURITY_LIST, body.len()));
            assert_eq!(body.len() > 100, header.zipped_len < header.body_len, "long bodies are zipped");
            assert_eq!(header.unpack(&bytes[16..]).unwrap(), body);
        }
    }

    #[test]
    fn names_are_gbk_cut_at_eight_bytes() {
        let list = [
            Security { code: "600519".into(), volunit: 100, name: "贵州茅台".into(), decimal_point: 2, pre_close: 1_500.5 },
            Security { code: "000001".into(), volunit: 100, name: "平安银行股份".into(), decimal_point: 2, pre_close: 11.0 },
            Security { code: "159915".into(), volunit: 100, name: "ETF".into(), decimal_point: 3, pre_close: 2.1 },
        ];
        let body = security_list(&list);
        assert_eq!(body.len(), 2 + 3 * SECURITY_LEN);
        let back = parse_security_list(&body).unwrap();
        assert_eq!(back[0], list[0]);
        assert_eq!(back[1].name, "平安银行");
        assert_eq!(back[2].name, "ETF");
    }

    #[test]
    fn xdxr_round_trips() {
        let events = [
            XdxrEvent {
                date: NaiveDate::from_ymd_opt(2025, 6, 20).unwrap(),
                category: 1,
                detail: XdxrDetail::Dividend { cash: 276.73, rights_price: 0.0, bonus_shares: 0.0, rights_shares: 0.0 },
            },
            XdxrEvent {
                date: NaiveDate::from_ymd_opt(2020, 1, 3).unwrap(),
                category: 5,
                detail: XdxrDetail::ShareChange { float_before: 100.0, total_before: 200.0, float_after: 150.0, total_after: 200.0 },
            },
        ];
        let body = xdxr(Market::Shanghai, "600519", &events);
        assert_eq!(body.len(), 11 + 2 * XDXR_EVENT_LEN);
        assert_eq!(parse_xdxr(&body).unwrap(), events);
        assert_eq!(parse_xdxr_request(&xdxr_request(Market::Shanghai, "600519")).unwrap(), (Market::Shanghai, "600519".to_string()));
    }

    #[test]
    fn truncated_and_foreign_bytes_are_errors_not_panics() {
        let bars = super::bars(
            Period::Day,
            &[Bar {
                time: NaiveDate::from_ymd_opt(2026, 1, 5).unwrap().and_hms_opt(15, 0, 0).unwrap(),
                open: 10_000,
                close: 10_100,
                high: 10_200,
                low: 9_900,
                vol: 1e4,
                amount: 1e7,
            }],
        );
        for cut in 0..bars.len() {
            assert!(parse_bars(Period::Day, &bars[..cut]).is_err(), "cut at {cut}");
        }
        assert!(ResponseHeader::parse(&[0xff; 16]).is_err());
        assert!(parse_request_header(&[0; 10]).is_err());
    }
}

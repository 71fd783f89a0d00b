//! A TDX quote server on loopback speaking the binary protocol of `protocols/tdx.md`: the setup
//! packets, security count and list, daily bars and xdxr, over the same universe as the Tushare
//! simulator (the same closes, unless [`TdxMode::Differ`] shifts them), with slow, dropping and
//! garbage-speaking fault modes.
//!
//! TCP has no header to label an answer with: everything this server backs is labelled by the
//! product's cite (`sandbox: true`) from configuration, as for the other simulators.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, Utc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use twilight_tdx::wire::{self, cmd, Bar, BarsQuery, Market, Period, Security, XdxrDetail, XdxrEvent};

use crate::calendar;
use crate::tushare::universe::{self, Board, Stock};
use crate::tushare::CLOSE_DATA_AT;

/// How the simulated server behaves.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum TdxMode {
    #[default]
    Normal,
    /// Sleep this long before each answer.
    Slow(Duration),
    /// Close the connection instead of answering (setup packets included).
    Drop,
    /// Answer with bytes that are not the protocol.
    Garbage,
    /// Closes off by this many per cent from the Tushare simulator's (0.02 → 0.02 %).
    Differ(f64),
}

/// The simulator; clones share state.
#[derive(Clone, Default)]
pub struct TdxSim {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    mode: TdxMode,
    /// Fixed "now"; the system clock when `None`.
    now: Option<DateTime<Utc>>,
    connections: u64,
    /// Requests per command word, setup packets included.
    calls: HashMap<u16, u64>,
}

/// Daily bars are stamped with the close.
const CLOSE: NaiveTime = NaiveTime::from_hms_opt(15, 0, 0).expect("valid time");

impl TdxSim {
    pub fn new() -> TdxSim {
        TdxSim::default()
    }

    /// Listens on 127.0.0.1:`port` (0 = ephemeral) and serves every connection in its own task.
    pub async fn start(&self, port: u16) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
        let addr = listener.local_addr()?;
        let sim = self.clone();
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        sim.state().connections += 1;
                        tokio::spawn(sim.clone().serve(stream));
                    }
                    Err(error) => tracing::warn!(%addr, %error, "sandbox TDX accept failed"),
                }
            }
        });
        Ok((addr, task))
    }

    pub fn set_mode(&self, mode: TdxMode) {
        self.state().mode = mode;
    }

    /// Fixes the clock that decides the newest bar; `None` follows the system clock.
    pub fn set_now(&self, now: Option<DateTime<Utc>>) {
        self.state().now = now;
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state().connections
    }

    /// Requests received for `command` (see `twilight_tdx::wire::cmd`).
    pub fn calls_for(&self, command: u16) -> u64 {
        self.state().calls.get(&command).copied().unwrap_or(0)
    }

    /// Requests received other than the setup packets.
    pub fn data_calls(&self) -> u64 {
        self.state().calls.iter().filter(|(c, _)| ![cmd::SETUP, cmd::SETUP_INFO].contains(c)).map(|(_, n)| n).sum()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn serve(self, mut stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        loop {
            let mut header = [0u8; wire::REQUEST_HEADER_LEN];
            if stream.read_exact(&mut header).await.is_err() {
                return;
            }
            let Ok((seq, len)) = wire::parse_request_header(&header) else { return };
            let mut packet = vec![0u8; usize::from(len)];
            if stream.read_exact(&mut packet).await.is_err() {
                return;
            }
            let command = u16::from_le_bytes([packet[0], packet[1]]);
            let mode = {
                let mut state = self.state();
                *state.calls.entry(command).or_default() += 1;
                state.mode
            };
            match mode {
                TdxMode::Drop => return,
                TdxMode::Garbage => {
                    let _ = stream.write_all(&[0x5a; wire::RESPONSE_HEADER_LEN + 8]).await;
                    return;
                }
                TdxMode::Slow(pause) => tokio::time::sleep(pause).await,
                TdxMode::Normal | TdxMode::Differ(_) => {}
            }
            let sim = self.clone();
            let answer =
                tokio::task::spawn_blocking(move || sim.answer(command, &packet[2..], mode)).await.expect("answering does not panic");
            // Unknown commands and malformed bodies end the connection, as real servers do.
            let Some(body) = answer else { return };
            if stream.write_all(&wire::response(seq, command, &body)).await.is_err() {
                return;
            }
        }
    }

    fn answer(&self, command: u16, body: &[u8], mode: TdxMode) -> Option<Vec<u8>> {
        let through = self.published_through();
        match command {
            cmd::SETUP | cmd::SETUP_INFO => Some(vec![0x01; 6]),
            cmd::SECURITY_COUNT => {
                let market = wire::parse_security_count_request(body).ok()?;
                Some(wire::security_count(listed(market, through).count() as u16))
            }
            cmd::SECURITY_LIST => {
                let (market, start) = wire::parse_security_list_request(body).ok()?;
                let page: Vec<Security> = listed(market, through)
                    .skip(usize::from(start))
                    .take(usize::from(wire::SECURITIES_PER_PAGE))
                    .map(|s| Security {
                        code: s.symbol.clone(),
                        volunit: 100,
                        name: s.name.clone(),
                        decimal_point: 2,
                        pre_close: calendar::index(through).map_or(0.0, |i| s.model.close(i) as f32),
                    })
                    .collect();
                Some(wire::security_list(&page))
            }
            cmd::BARS => {
                let query = wire::parse_bars_request(body).ok()?;
                let differ = match mode {
                    TdxMode::Differ(pct) => pct,
                    _ => 0.0,
                };
                Some(wire::bars(query.period, &bars(&query, through, differ)))
            }
            cmd::XDXR => {
                let (market, code) = wire::parse_xdxr_request(body).ok()?;
                let events: Vec<XdxrEvent> = stock(market, &code)
                    .map(|s| {
                        s.model
                            .dividends(through)
                            .map(|(date, cash)| XdxrEvent {
                                date,
                                category: 1,
                                detail: XdxrDetail::Dividend {
                                    cash: (cash * 10.0) as f32,
                                    rights_price: 0.0,
                                    bonus_shares: 0.0,
                                    rights_shares: 0.0,
                                },
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Some(wire::xdxr(market, &code, &events))
            }
            _ => None,
        }
    }

    /// The newest day with a bar: today from when the Tushare simulator publishes it on (a real
    /// server has it from the close; one moment for both keeps the sandbox's sources agreeing on
    /// which day is the latest), else the day before.
    fn published_through(&self) -> NaiveDate {
        let now = self.state().now.unwrap_or_else(Utc::now);
        let local = now.with_timezone(&FixedOffset::east_opt(8 * 3600).expect("a valid offset")).naive_local();
        let day = if local.time() >= CLOSE_DATA_AT { local.date() } else { local.date().pred_opt().expect("a day after 1990") };
        if calendar::is_open(day) {
            day
        } else {
            calendar::prev_open(day).expect("a day after 1990")
        }
    }
}

fn exchange_of(market: Market) -> impl Fn(&Board) -> bool {
    move |board| match market {
        Market::Shanghai => matches!(board, Board::SseMain | Board::Star),
        Market::Shenzhen => matches!(board, Board::SzseMain | Board::ChiNext),
    }
}

/// The market's listed stocks by code.
fn listed(market: Market, through: NaiveDate) -> impl Iterator<Item = &'static Stock> {
    let on_market = exchange_of(market);
    universe::all().iter().filter(move |s| on_market(&s.board) && s.list_date <= through)
}

fn stock(market: Market, code: &str) -> Option<&'static Stock> {
    let suffix = match market {
        Market::Shanghai => "SH",
        Market::Shenzhen => "SZ",
    };
    universe::find(&format!("{code}.{suffix}"))
}

/// The daily bars a query asks for, oldest first: `count` back from `start` bars before the newest.
/// Other periods answer no bars (the product asks for days only).
fn bars(query: &BarsQuery, through: NaiveDate, differ_pct: f64) -> Vec<Bar> {
    if !matches!(query.period, Period::Day | Period::DayAlt) {
        return Vec::new();
    }
    let Some(stock) = stock(query.market, &query.code) else { return Vec::new() };
    let milli = |yuan: f64| (yuan * 1000.0).round() as i64;
    let mut bars: Vec<Bar> = calendar::open_days(stock.list_date, through)
        .rev()
        .skip(usize::from(query.start))
        .take(usize::from(query.count))
        .map(|day| {
            let b = stock.model.bar(calendar::index(day).expect("an open day"));
            let close = milli(b.close * (1.0 + differ_pct / 100.0));
            Bar {
                time: day.and_time(CLOSE),
                open: milli(b.open),
                close,
                high: milli(b.high).max(close),
                low: milli(b.low).min(close),
                vol: b.vol as f32,
                amount: (b.amount * 1000.0) as f32,
            }
        })
        .collect();
    bars.reverse();
    bars
}

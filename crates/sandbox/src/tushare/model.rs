//! Prices, volumes and fundamentals as pure functions of (code, trading day) and (code, period).
//!
//! Log close = level + trend + three slow waves + a market factor + the code's own fractal noise
//! (linearly interpolated hashed values at periods of 1..64 trading days, amplitude growing with
//! the period like a random walk's). Every term has a known bound on its day-to-day change, and
//! the amplitudes are scaled so their sum stays inside the board's price limit: no day breaks it,
//! with no state carried from one day to the next. Fundamentals follow one earnings line per code
//! (FY2024 EPS grown at the price trend's rate, with yearly swings), split into quarters by fixed
//! seasonal weights, so TTM figures from `fina_indicator` and `daily_basic` agree.

use chrono::{Datelike, Days, Months, NaiveDate};

use super::universe::Board;
use crate::calendar;
use crate::seed::{between, log_between, mix, signed, unit};

/// Calibration a well-known code pins; other codes draw theirs from their seed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Profile {
    /// Price level from [`REF_DAY`] on, yuan (waves and noise move the price around it).
    pub price: f64,
    /// 万股.
    pub total_share: f64,
    /// Share of `total_share` that is tradable on the A-share market.
    pub float_ratio: f64,
    /// FY[`REF_YEAR`] basic EPS, yuan; negative for a loss-maker.
    pub eps: f64,
    /// Book value per share at the end of [`REF_YEAR`].
    pub bps: f64,
    /// Scale of the code's own daily log moves.
    pub vol: f64,
    /// Yearly log growth of earnings.
    pub growth: f64,
}

/// The price trend runs from the listing price to `Profile::price` on this day and is flat after.
const REF_DAY: NaiveDate = NaiveDate::from_ymd_opt(2024, 12, 31).expect("valid date");
/// The fiscal year `Profile::eps` and `Profile::bps` describe.
const REF_YEAR: i32 = 2024;
/// Periods (trading days) of the noise octaves.
const OCTAVES: [u32; 7] = [1, 2, 4, 8, 16, 32, 64];
const MARKET_SEED: u64 = 0x4D41_524B_4554;
/// Scale of the market factor every code shares (times its beta).
const MARKET_VOL: f64 = 0.008;
/// Largest total swing of waves + market + noise around the trend, in log terms: with trends no
/// lower than 3 yuan, this keeps every price above ~1.35 yuan, where 2-decimal rounding is small.
const MAX_SWING: f64 = 0.8;
/// Share of the price limit the model may use; the rest absorbs rounding of cheap prices.
const LIMIT_USE: f64 = 0.85;
/// Trading days per year, for turning the daily drift into yearly earnings growth.
const DAYS_PER_YEAR: f64 = 242.0;
const FINANCIALS: &[&str] = &["银行", "保险", "证券"];

/// `x` rounded to `dp` decimals, as Tushare reports numbers.
pub(crate) fn round(x: f64, dp: i32) -> f64 {
    let scale = 10f64.powi(dp);
    (x * scale).round() / scale
}

/// A slow sinusoid in log price.
#[derive(Clone, Copy)]
struct Wave {
    amp: f64,
    omega: f64,
    phase: f64,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Bar {
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub pre_close: f64,
    /// Lots of 100 shares.
    pub vol: f64,
    /// Thousand yuan.
    pub amount: f64,
}

/// `daily_basic` figures; `None` where Tushare leaves a blank (losses, no dividend, new listing).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Basic {
    pub close: f64,
    pub turnover_rate: f64,
    pub turnover_rate_f: f64,
    pub volume_ratio: Option<f64>,
    pub pe: Option<f64>,
    pub pe_ttm: Option<f64>,
    pub pb: f64,
    pub ps: f64,
    pub ps_ttm: f64,
    pub dv_ratio: Option<f64>,
    pub dv_ttm: Option<f64>,
    pub total_mv: f64,
    pub circ_mv: f64,
}

/// `fina_indicator` figures for one report (cumulative from the start of the fiscal year, as
/// Chinese reports are).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Report {
    pub eps: f64,
    pub bps: f64,
    pub roe: f64,
    pub roe_dt: f64,
    pub roa: f64,
    pub grossprofit_margin: Option<f64>,
    pub netprofit_margin: f64,
    pub debt_to_assets: f64,
    pub current_ratio: Option<f64>,
    pub quick_ratio: Option<f64>,
    pub or_yoy: f64,
    pub netprofit_yoy: Option<f64>,
    pub ocfps: f64,
}

/// A quarterly reporting period; `quarter` 4 is the annual report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Period {
    pub year: i32,
    pub quarter: u32,
}

impl Period {
    /// The period whose quarter contains `day`.
    pub fn containing(day: NaiveDate) -> Period {
        Period { year: day.year(), quarter: (day.month() - 1) / 3 + 1 }
    }

    /// The period ending exactly on `day`, if `day` is a quarter end.
    pub fn ending(day: NaiveDate) -> Option<Period> {
        let p = Period::containing(day);
        (p.end() == day).then_some(p)
    }

    pub fn end(self) -> NaiveDate {
        let first_of_next = NaiveDate::from_ymd_opt(self.year, 1, 1).expect("valid year") + Months::new(self.quarter * 3);
        first_of_next.pred_opt().expect("not the first day of time")
    }

    pub fn prev(self) -> Period {
        match self.quarter {
            1 => Period { year: self.year - 1, quarter: 4 },
            q => Period { year: self.year, quarter: q - 1 },
        }
    }

    fn same_quarter_last_year(self) -> Period {
        Period { year: self.year - 1, ..self }
    }
}

/// A cash dividend out of one fiscal year's profit.
#[derive(Clone, Copy)]
struct Dividend {
    ex_date: NaiveDate,
    /// Yuan per share.
    cash: f64,
    /// The step in the backward adjustment factor on `ex_date`.
    factor: f64,
}

/// Everything that decides one code's numbers.
pub(crate) struct Model {
    seed: u64,
    board: Board,
    list_date: NaiveDate,
    /// Trading-day number of `list_date`.
    i_list: u32,
    // Price.
    ln_level: f64,
    i_ref: f64,
    drift: f64,
    waves: [Wave; 3],
    beta: f64,
    noise: f64,
    /// Typical daily turnover, % of float shares.
    turnover: f64,
    // Shares, 万股.
    pub total_share: f64,
    pub float_share: f64,
    pub free_share: f64,
    // Books.
    eps_ref: f64,
    growth: f64,
    /// Relative size of yearly swings in earnings; above 1, some years turn to a loss.
    swing: f64,
    bps_ref: f64,
    bps_growth: f64,
    /// Cumulative seasonal weights of quarters 1..=4 (the last is 1).
    ytd_weights: [f64; 4],
    net_margin: f64,
    gross_margin: Option<f64>,
    debt_ratio: f64,
    /// (current, quick); banks and insurers report neither.
    liquidity: Option<(f64, f64)>,
    payout: f64,
}

/// Noise made of [`OCTAVES`]: each octave is hashed values at multiples of its period, linearly
/// interpolated, scaled by sqrt(period).
fn fractal(seed: u64, i: u32) -> f64 {
    OCTAVES
        .iter()
        .zip(0u64..)
        .map(|(&p, k)| {
            let at = |j: u32| signed(mix(&[seed, k, u64::from(j)]));
            let (j, t) = (i / p, f64::from(i % p) / f64::from(p));
            f64::from(p).sqrt() * (at(j) * (1.0 - t) + at(j + 1) * t)
        })
        .sum()
}

/// Bounds of [`fractal`]: (largest value, largest change from one day to the next).
fn fractal_bounds() -> (f64, f64) {
    OCTAVES.iter().fold((0.0, 0.0), |(value, step), &p| {
        let p = f64::from(p);
        (value + p.sqrt(), step + 2.0 / p.sqrt())
    })
}

impl Model {
    pub fn new(seed: u64, board: Board, industry: &str, list_date: NaiveDate, pinned: Option<Profile>) -> Model {
        let h = |k: u64| mix(&[seed, k]);
        let financial = FINANCIALS.contains(&industry);
        let i_list = calendar::index(list_date).expect("listed on an open day");
        let i_ref = calendar::index(REF_DAY).expect("REF_DAY is open");

        let price = pinned.map_or_else(
            || match board {
                Board::Bse => log_between(h(1), 3.0, 30.0),
                Board::Star => log_between(h(1), 10.0, 120.0),
                _ => log_between(h(1), 4.0, 80.0),
            },
            |p| p.price,
        );
        let ipo = log_between(h(2), 4.0, 40.0);
        let drift = ((price / ipo).ln() / f64::from(i_ref.saturating_sub(i_list).max(1))).clamp(-0.002, 0.002);
        let profile = pinned.unwrap_or_else(|| generated_profile(h, board, financial, price, drift, list_date));

        let mut waves = [0u64, 1, 2].map(|j| {
            let period = log_between(h(10 + j), 60.0, 1200.0);
            Wave {
                amp: profile.vol * between(h(13 + j), 1.5, 6.0),
                omega: std::f64::consts::TAU / period,
                phase: between(h(16 + j), 0.0, std::f64::consts::TAU),
            }
        });
        let mut beta = between(h(19), 0.6, 1.3);
        let mut noise = profile.vol;
        let (fractal_max, fractal_step) = fractal_bounds();
        let step = waves.iter().map(|w| w.amp * w.omega).sum::<f64>() + (beta * MARKET_VOL + noise) * fractal_step;
        let reach = waves.iter().map(|w| w.amp).sum::<f64>() + (beta * MARKET_VOL + noise) * fractal_max;
        let step_budget = (1.0 + LIMIT_USE * board.limit()).ln() - drift.abs();
        let scale = (step_budget / step).min(MAX_SWING / reach).min(1.0);
        waves.iter_mut().for_each(|w| w.amp *= scale);
        beta *= scale;
        noise *= scale;

        let total_mv = price * profile.total_share;
        let float_share = profile.total_share * profile.float_ratio;
        let payout = if financial {
            0.3
        } else if unit(h(45)) < 0.25 {
            0.0
        } else {
            between(h(46), 0.1, 0.6)
        };
        let bps_growth = (profile.eps / profile.bps * (1.0 - payout)).clamp(-0.15, 0.25);
        let weights = [0u64, 1, 2, 3].map(|q| 0.25 + 0.06 * signed(h(30 + q)));
        let total_weight: f64 = weights.iter().sum();
        let ytd_weights = [1, 2, 3, 4].map(|q| weights[..q].iter().sum::<f64>() / total_weight);
        let net_margin = if financial { between(h(40), 0.25, 0.45) } else { between(h(40), 0.03, 0.3) };
        let current = between(h(43), 0.8, 4.0);
        Model {
            seed,
            board,
            list_date,
            i_list,
            ln_level: price.ln(),
            i_ref: f64::from(i_ref),
            drift,
            waves,
            beta,
            noise,
            turnover: (log_between(h(20), 0.5, 3.0) * (5e5 / total_mv).powf(0.25)).clamp(0.05, 10.0),
            total_share: profile.total_share,
            float_share,
            free_share: float_share * between(h(21), 0.5, 0.9),
            eps_ref: profile.eps,
            growth: profile.growth,
            swing: if pinned.is_some() {
                0.05
            } else if unit(h(22)) < 0.08 {
                between(h(23), 0.9, 1.6)
            } else {
                between(h(23), 0.05, 0.4)
            },
            bps_ref: profile.bps,
            bps_growth,
            ytd_weights,
            net_margin,
            gross_margin: (!financial).then(|| (net_margin + between(h(41), 0.08, 0.4)).min(0.95)),
            debt_ratio: if financial { between(h(42), 88.0, 93.0) } else { between(h(42), 12.0, 70.0) },
            liquidity: (!financial).then(|| (current, current * between(h(44), 0.45, 0.9))),
            payout,
        }
    }

    /// The close on trading day `i`, rounded to fen.
    pub fn close(&self, i: u32) -> f64 {
        let i_f = f64::from(i);
        let trend = self.drift * (i_f - self.i_ref).min(0.0);
        let waves: f64 = self.waves.iter().map(|w| w.amp * (w.omega * i_f + w.phase).sin()).sum();
        let ln = self.ln_level + trend + waves + self.beta * MARKET_VOL * fractal(MARKET_SEED, i) + self.noise * fractal(self.seed, i);
        round(ln.exp(), 2)
    }

    /// The close before trading day `i` (day 0, the SSE's first session, has none: its own close).
    fn pre_close(&self, i: u32) -> f64 {
        self.close(i.saturating_sub(1))
    }

    /// Turnover on trading day `i`, % of float shares: busier on big moves.
    fn turnover_on(&self, i: u32) -> f64 {
        let move_size = (self.close(i) / self.pre_close(i)).ln().abs();
        self.turnover * (0.45 * signed(mix(&[self.seed, 50, u64::from(i)])) + 12.0 * move_size).exp()
    }

    /// Lots traded on trading day `i`.
    fn vol_on(&self, i: u32) -> f64 {
        round(self.turnover_on(i) * self.float_share, 2)
    }

    /// The bar of trading day `i`. `pre_close` is always the previous trading day's close.
    pub fn bar(&self, i: u32) -> Bar {
        let (pre_close, close) = (self.pre_close(i), self.close(i));
        let h = |k: u64| mix(&[self.seed, k, u64::from(i)]);
        let limit = self.board.limit();
        let in_band = |x: f64| x.clamp(round(pre_close * (1.0 - limit), 2), round(pre_close * (1.0 + limit), 2));
        let open_ln = pre_close.ln() + (close / pre_close).ln() * 0.7 * unit(h(60)) + self.noise * signed(h(61));
        let open = in_band(round(open_ln.exp(), 2));
        let high = in_band(round(open.max(close) * (1.0 + 1.5 * self.noise * unit(h(62))), 2));
        let low = in_band(round(open.min(close) * (1.0 - 1.5 * self.noise * unit(h(63))), 2));
        let vol = self.vol_on(i);
        let amount = round(vol * (open + high + low + close) / 4.0 / 10.0, 3);
        Bar { open, high, low, close, pre_close, vol, amount }
    }

    /// `daily_basic` on open `day` (trading day `i`), with the books as announced by then.
    pub fn basic(&self, day: NaiveDate, i: u32) -> Basic {
        let close = self.close(i);
        let vol = self.vol_on(i);
        let volume_ratio = (i >= self.i_list + 5).then(|| {
            let past: f64 = (i - 5..i).map(|j| self.vol_on(j)).sum();
            vol / (past / 5.0)
        });
        let report = self.latest_report(day);
        let fiscal_year = if report.quarter == 4 { report.year } else { report.year - 1 };
        let positive = |x: f64| (x > 0.0).then_some(x);
        let per_cent_of_close = |cash: f64| cash / close * 100.0;
        let last_year = day - Months::new(12);
        let paid_last_year: f64 = [day.year() - 1, day.year() - 2]
            .iter()
            .filter_map(|&y| self.dividend(y))
            .filter(|d| d.ex_date > last_year && d.ex_date <= day)
            .map(|d| d.cash)
            .sum();
        Basic {
            close,
            turnover_rate: vol / self.float_share,
            turnover_rate_f: vol / self.free_share,
            volume_ratio,
            pe: positive(self.annual_eps(fiscal_year)).map(|e| close / e),
            pe_ttm: positive(self.ttm(report, Self::annual_eps)).map(|e| close / e),
            pb: close / self.bps(report),
            ps: close / self.annual_revenue(fiscal_year),
            ps_ttm: close / self.ttm(report, Self::annual_revenue),
            dv_ratio: self.dividend(fiscal_year).map(|d| per_cent_of_close(d.cash)),
            dv_ttm: positive(paid_last_year).map(per_cent_of_close),
            total_mv: close * self.total_share,
            circ_mv: close * self.float_share,
        }
    }

    /// The backward adjustment factor on `day`: 1 at listing, stepping up on each ex-dividend day.
    /// (Raw prices do not drop on ex-dates here, so `pre_close` stays the previous close.)
    pub fn adj_factor(&self, day: NaiveDate) -> f64 {
        self.paid_by(day).map(|d| d.factor).product()
    }

    /// Cash dividends gone ex by `day`, oldest first: (ex-date, yuan per share).
    pub fn dividends(&self, day: NaiveDate) -> impl Iterator<Item = (NaiveDate, f64)> + '_ {
        self.paid_by(day).map(|d| (d.ex_date, d.cash))
    }

    fn paid_by(&self, day: NaiveDate) -> impl Iterator<Item = Dividend> + '_ {
        (self.list_date.year()..day.year()).filter_map(|y| self.dividend(y)).filter(move |d| d.ex_date <= day)
    }

    /// The first period reported: the quarter the company listed in.
    pub fn first_report(&self) -> Period {
        Period::containing(self.list_date)
    }

    /// The latest period whose report was announced on or before `day`.
    pub fn latest_report(&self, day: NaiveDate) -> Period {
        let mut p = Period::containing(day).prev();
        while self.ann_date(p) > day {
            p = p.prev();
        }
        p
    }

    /// When `period`'s report comes out: some 20 days after the period ends and within the legal
    /// deadline (one month for Q1/Q3, two for H1), annual reports by April 10 so that every report
    /// comes out after the one before it; moved back to a trading day.
    pub fn ann_date(&self, period: Period) -> NaiveDate {
        let latest = match period.quarter {
            1 => 30,
            2 => 62,
            3 => 31,
            _ => 100,
        };
        let h = mix(&[self.seed, 70, period.year as u64, u64::from(period.quarter)]);
        let day = period.end() + Days::new(20 + h % (latest - 20 + 1));
        if calendar::is_open(day) {
            day
        } else {
            calendar::prev_open(day).expect("long after 1990")
        }
    }

    pub fn report(&self, period: Period) -> Report {
        let h = |k: u64| mix(&[self.seed, k, period.year as u64, u64::from(period.quarter)]);
        let eps = self.ytd(period, Self::annual_eps);
        let revenue = self.ytd(period, Self::annual_revenue);
        let bps = self.bps(period);
        let opening_bps = self.bps(Period { year: period.year - 1, quarter: 4 });
        let roe = eps / ((bps + opening_bps) / 2.0) * 100.0;
        let debt_to_assets = (self.debt_ratio + 1.5 * signed(h(80))).clamp(1.0, 99.0);
        let last_year = period.same_quarter_last_year();
        let eps_last_year = self.ytd(last_year, Self::annual_eps);
        let wobble = |k: u64| 1.0 + 0.08 * signed(h(k));
        Report {
            eps,
            bps,
            roe,
            roe_dt: roe * between(h(81), 0.94, 1.0),
            roa: roe * (1.0 - debt_to_assets / 100.0),
            grossprofit_margin: self.gross_margin.map(|g| g * 100.0 * wobble(82)),
            netprofit_margin: eps / revenue * 100.0,
            debt_to_assets,
            current_ratio: self.liquidity.map(|(current, _)| current * wobble(83)),
            quick_ratio: self.liquidity.map(|(_, quick)| quick * wobble(83)),
            or_yoy: (revenue / self.ytd(last_year, Self::annual_revenue) - 1.0) * 100.0,
            netprofit_yoy: (eps_last_year != 0.0).then(|| (eps - eps_last_year) / eps_last_year.abs() * 100.0),
            ocfps: eps * between(h(84), 0.4, 1.6),
        }
    }

    /// Every figure `fina_indicator` shows by default beyond the report's own, by name, derived from
    /// one balance sheet and income statement per report so that the ratios agree with each other
    /// (amounts in yuan, ratios in %, turnover in times; `None` where Tushare leaves a blank:
    /// margins and liquidity of banks and insurers, ratios over a non-positive base).
    pub fn indicators(&self, period: Period) -> Vec<(&'static str, Option<f64>)> {
        let h = |k: u64| mix(&[self.seed, k, period.year as u64, u64::from(period.quarter)]);
        let around = |k: u64, x: f64| x * (1.0 + 0.1 * signed(h(k)));
        let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
        let pct = |a: f64, b: f64| ratio(a, b).map(|r| r * 100.0);
        let yoy = |now: f64, then: f64| (then != 0.0).then(|| (now - then) / then.abs() * 100.0);
        let r = self.report(period);
        let last = self.report(period.same_quarter_last_year());
        let q = f64::from(period.quarter);
        let shares = self.total_share * 1e4;
        let financial = self.gross_margin.is_none();

        // The books, in yuan, year to date.
        let revenue_ps = self.ytd(period, Self::annual_revenue);
        let (revenue, profit) = (revenue_ps * shares, r.eps * shares);
        let equity = r.bps * shares;
        let assets = equity / (1.0 - r.debt_to_assets / 100.0);
        let debt = assets - equity;
        let (current_debt, interest_debt) = (debt * around(100, 0.6), debt * around(101, 0.3));
        let cash = assets * around(102, 0.12);
        let current_assets = if financial { assets * 0.5 } else { current_debt * r.current_ratio.unwrap_or(1.0) };
        let fixed_assets = assets * around(103, 0.2);
        let tangible = equity * around(104, 0.9);
        let ocf = r.ocfps * shares;
        let extra_item = profit * 0.03 * signed(h(105));
        let op_income = profit * around(106, 1.15);
        let ebit = op_income + interest_debt * 0.04 * q / 4.0;
        let da = fixed_assets * 0.05 * q / 4.0;
        let fcff = ocf - da * 1.2;
        let gross_profit = r.grossprofit_margin.map(|m| revenue * m / 100.0);
        let sales_exp = r.grossprofit_margin.map(|m| (m - r.netprofit_margin).max(0.0) * around(107, 0.35));
        let admin_exp = r.grossprofit_margin.map(|m| (m - r.netprofit_margin).max(0.0) * around(108, 0.25));
        let fina_exp = interest_debt * 0.04 * q / 4.0 / revenue * 100.0;
        let ar_turn = (!financial).then(|| around(109, 12.0) * q / 4.0);
        let inv_turn = (!financial).then(|| around(110, 5.0) * q / 4.0);
        let single = |ytd: f64, previous: f64| if period.quarter == 1 { ytd } else { ytd - previous };
        let previous = Period { quarter: period.quarter.max(2) - 1, ..period };
        let q_profit = single(profit, self.ytd(previous, Self::annual_eps) * shares);
        let q_revenue = single(revenue, self.ytd(previous, Self::annual_revenue) * shares);
        let last_revenue = self.ytd(period.same_quarter_last_year(), Self::annual_revenue) * shares;
        let last_assets = last.bps * shares / (1.0 - last.debt_to_assets / 100.0);

        vec![
            ("eps", Some(r.eps)),
            ("dt_eps", Some(r.eps)),
            ("total_revenue_ps", Some(revenue_ps * around(111, 1.01).max(1.0))),
            ("revenue_ps", Some(revenue_ps)),
            ("capital_rese_ps", Some(r.bps * around(112, 0.15))),
            ("surplus_rese_ps", Some(r.bps * around(113, 0.1))),
            ("undist_profit_ps", Some(r.bps * around(114, 0.55))),
            ("extra_item", Some(extra_item)),
            ("profit_dedt", Some(profit - extra_item)),
            ("gross_margin", gross_profit),
            ("current_ratio", r.current_ratio),
            ("quick_ratio", r.quick_ratio),
            ("cash_ratio", r.quick_ratio.map(|quick| quick * around(115, 0.6))),
            ("invturn_days", inv_turn.map(|t| 90.0 * q / t)),
            ("arturn_days", ar_turn.map(|t| 90.0 * q / t)),
            ("inv_turn", inv_turn),
            ("ar_turn", ar_turn),
            ("ca_turn", ratio(revenue, current_assets)),
            ("fa_turn", ratio(revenue, fixed_assets)),
            ("assets_turn", ratio(revenue, assets)),
            ("op_income", Some(op_income)),
            ("ebit", Some(ebit)),
            ("ebitda", Some(ebit + da)),
            ("fcff", Some(fcff)),
            ("fcfe", Some(fcff - interest_debt * 0.01)),
            ("current_exint", Some(current_debt - interest_debt * 0.4)),
            ("noncurrent_exint", Some(debt - current_debt - interest_debt * 0.6)),
            ("interestdebt", Some(interest_debt)),
            ("netdebt", Some(interest_debt - cash)),
            ("tangible_asset", Some(tangible)),
            ("working_capital", Some(current_assets - current_debt)),
            ("networking_capital", Some(current_assets - cash - (current_debt - interest_debt * 0.4))),
            ("invest_capital", Some(equity + interest_debt)),
            ("retained_earnings", Some(r.bps * around(114, 0.55) * shares)),
            ("diluted2_eps", Some(r.eps * around(116, 0.99))),
            ("bps", Some(r.bps)),
            ("ocfps", Some(r.ocfps)),
            ("retainedps", Some(r.bps * (around(113, 0.1) + around(114, 0.55)))),
            ("cfps", Some(r.ocfps + cash / shares * 0.1 * signed(h(117)))),
            ("ebit_ps", Some(ebit / shares)),
            ("fcff_ps", Some(fcff / shares)),
            ("fcfe_ps", Some((fcff - interest_debt * 0.01) / shares)),
            ("netprofit_margin", Some(r.netprofit_margin)),
            ("grossprofit_margin", r.grossprofit_margin),
            ("cogs_of_sales", r.grossprofit_margin.map(|m| 100.0 - m)),
            ("expense_of_sales", sales_exp.zip(admin_exp).map(|(s, a)| s + a + fina_exp)),
            ("profit_to_gr", Some(r.netprofit_margin * around(118, 1.01))),
            ("saleexp_to_gr", sales_exp),
            ("adminexp_of_gr", admin_exp),
            ("finaexp_of_gr", Some(fina_exp)),
            ("impai_ttm", Some(0.3 * signed(h(119)))),
            ("gc_of_gr", Some(100.0 - r.netprofit_margin * around(120, 1.2))),
            ("op_of_gr", pct(op_income, revenue)),
            ("ebit_of_gr", pct(ebit, revenue)),
            ("roe", Some(r.roe)),
            ("roe_waa", Some(r.roe * around(121, 1.0))),
            ("roe_dt", Some(r.roe_dt)),
            ("roa", Some(r.roa)),
            ("npta", pct(profit, assets)),
            ("roic", pct(ebit * 0.75, equity + interest_debt)),
            ("roe_yearly", Some(r.roe * 4.0 / q)),
            ("roa2_yearly", Some(r.roa * 4.0 / q)),
            ("debt_to_assets", Some(r.debt_to_assets)),
            ("assets_to_eqt", ratio(assets, equity)),
            ("dp_assets_to_eqt", ratio(assets, equity).map(|x| x * around(122, 1.01))),
            ("ca_to_assets", pct(current_assets, assets)),
            ("nca_to_assets", pct(assets - current_assets, assets)),
            ("tbassets_to_totalassets", pct(tangible + debt, assets)),
            ("int_to_talcap", pct(interest_debt, interest_debt + equity)),
            ("eqt_to_talcapital", pct(equity, interest_debt + equity)),
            ("currentdebt_to_debt", pct(current_debt, debt)),
            ("longdeb_to_debt", pct(debt - current_debt, debt)),
            ("ocf_to_shortdebt", ratio(ocf, current_debt)),
            ("debt_to_eqt", ratio(debt, equity)),
            ("eqt_to_debt", ratio(equity, debt)),
            ("eqt_to_interestdebt", ratio(equity, interest_debt)),
            ("tangibleasset_to_debt", ratio(tangible, debt)),
            ("tangasset_to_intdebt", ratio(tangible, interest_debt)),
            ("tangibleasset_to_netdebt", ratio(tangible, interest_debt - cash)),
            ("ocf_to_debt", ratio(ocf, debt)),
            ("turn_days", inv_turn.zip(ar_turn).map(|(i, a)| 90.0 * q / i + 90.0 * q / a)),
            ("roa_yearly", pct(profit * 4.0 / q, assets)),
            ("roa_dp", pct(profit, (assets + last_assets) / 2.0)),
            ("fixed_assets", Some(fixed_assets)),
            ("profit_to_op", pct(profit, op_income)),
            ("q_saleexp_to_gr", sales_exp.map(|x| x * around(123, 1.0))),
            ("q_gc_to_gr", Some(100.0 - pct(q_profit, q_revenue).unwrap_or(r.netprofit_margin) * 1.2)),
            ("q_roe", pct(q_profit, equity)),
            ("q_dt_roe", pct(q_profit - extra_item / q, equity)),
            ("q_npta", pct(q_profit, assets)),
            ("q_ocf_to_sales", pct(ocf / q, q_revenue)),
            ("basic_eps_yoy", yoy(r.eps, last.eps)),
            ("dt_eps_yoy", yoy(r.eps, last.eps)),
            ("cfps_yoy", yoy(r.ocfps, last.ocfps)),
            ("op_yoy", r.netprofit_yoy.map(|y| around(124, y))),
            ("ebt_yoy", r.netprofit_yoy.map(|y| around(125, y))),
            ("netprofit_yoy", r.netprofit_yoy),
            ("dt_netprofit_yoy", r.netprofit_yoy.map(|y| around(126, y))),
            ("ocf_yoy", yoy(r.ocfps, last.ocfps)),
            ("roe_yoy", yoy(r.roe, last.roe)),
            ("bps_yoy", yoy(r.bps, last.bps)),
            ("assets_yoy", yoy(assets, last_assets)),
            ("eqt_yoy", yoy(r.bps, last.bps)),
            ("tr_yoy", yoy(revenue, last_revenue)),
            ("or_yoy", Some(r.or_yoy)),
            ("q_sales_yoy", yoy(q_revenue, last_revenue / q)),
            ("q_op_qoq", Some(20.0 * signed(h(128)))),
            ("equity_yoy", yoy(r.bps, last.bps)),
        ]
    }

    /// Earnings on trend for `year`, before the yearly swing; always positive.
    fn earnings_scale(&self, year: i32) -> f64 {
        self.eps_ref.abs() * (self.growth * f64::from(year - REF_YEAR)).exp()
    }

    fn annual_eps(&self, year: i32) -> f64 {
        self.earnings_scale(year) * (self.eps_ref.signum() + self.swing * signed(mix(&[self.seed, 90, year as u64])))
    }

    /// Revenue per share: the earnings trend at the code's typical margin, so it never goes negative.
    fn annual_revenue(&self, year: i32) -> f64 {
        self.earnings_scale(year) / self.net_margin * (1.0 + 0.08 * signed(mix(&[self.seed, 91, year as u64])))
    }

    /// `annual(year)` accumulated from January to the end of `period`.
    fn ytd(&self, period: Period, annual: fn(&Self, i32) -> f64) -> f64 {
        annual(self, period.year) * self.ytd_weights[period.quarter as usize - 1]
    }

    /// `annual` over the four quarters ending with `period`.
    fn ttm(&self, period: Period, annual: fn(&Self, i32) -> f64) -> f64 {
        let w = self.ytd_weights[period.quarter as usize - 1];
        annual(self, period.year) * w + annual(self, period.year - 1) * (1.0 - w)
    }

    fn bps(&self, period: Period) -> f64 {
        let years = f64::from(period.year - REF_YEAR) + f64::from(period.quarter) / 4.0 - 1.0;
        self.bps_ref * (self.bps_growth * years).exp()
    }

    /// The cash dividend out of fiscal `year`, paid some weeks after the annual report, if the
    /// year was profitable, the company pays out, and it was listed by the ex-date.
    fn dividend(&self, year: i32) -> Option<Dividend> {
        let eps = self.annual_eps(year);
        if eps <= 0.0 || self.payout == 0.0 {
            return None;
        }
        let announced = self.ann_date(Period { year, quarter: 4 });
        let ex_date = calendar::open_on_or_after(announced + Days::new(30 + mix(&[self.seed, 92, year as u64]) % 45));
        let pre_close = self.pre_close(calendar::index(ex_date)?);
        let cash = round(self.payout * eps, 4).min(pre_close / 2.0);
        (ex_date > self.list_date).then_some(Dividend { ex_date, cash, factor: pre_close / (pre_close - cash) })
    }
}

/// The calibration of a code no one pinned, drawn from its seed.
fn generated_profile(h: impl Fn(u64) -> u64, board: Board, financial: bool, price: f64, drift: f64, list_date: NaiveDate) -> Profile {
    let (pe, pb) = if financial {
        (log_between(h(3), 4.0, 12.0), log_between(h(4), 0.4, 1.2))
    } else {
        (log_between(h(3), 10.0, 90.0), log_between(h(4), 0.8, 8.0))
    };
    let loss_share = if board == Board::Star { 0.15 } else { 0.07 };
    let eps = if unit(h(5)) < loss_share { -price / pe / 2.0 } else { price / pe };
    let (shares, vol) = match board {
        Board::SseMain | Board::SzseMain => (log_between(h(6), 8_000.0, 600_000.0), between(h(7), 0.008, 0.013)),
        Board::ChiNext => (log_between(h(6), 5_000.0, 150_000.0), between(h(7), 0.009, 0.014)),
        Board::Star => (log_between(h(6), 5_000.0, 200_000.0), between(h(7), 0.011, 0.016)),
        Board::Bse => (log_between(h(6), 3_000.0, 30_000.0), between(h(7), 0.012, 0.02)),
    };
    let float_ratio = if list_date.year() < 2015 { between(h(8), 0.85, 1.0) } else { between(h(8), 0.3, 0.85) };
    Profile { price, total_share: shares, float_ratio, eps, bps: price / pb, vol, growth: (drift * DAYS_PER_YEAR).clamp(-0.1, 0.25) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tushare::universe;

    #[test]
    fn fractal_stays_inside_its_bounds() {
        let (max, step) = fractal_bounds();
        let mut prev = fractal(7, 0);
        for i in 1..20_000 {
            let x = fractal(7, i);
            assert!(x.abs() <= max && (x - prev).abs() <= step, "{i}");
            prev = x;
        }
    }

    #[test]
    fn periods_and_their_ends() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).unwrap();
        assert_eq!(Period::containing(d(2025, 5, 6)), Period { year: 2025, quarter: 2 });
        assert_eq!(Period { year: 2025, quarter: 2 }.end(), d(2025, 6, 30));
        assert_eq!(Period { year: 2025, quarter: 4 }.end(), d(2025, 12, 31));
        assert_eq!(Period::ending(d(2025, 9, 30)), Some(Period { year: 2025, quarter: 3 }));
        assert_eq!(Period::ending(d(2025, 9, 29)), None);
        assert_eq!(Period { year: 2025, quarter: 1 }.prev(), Period { year: 2024, quarter: 4 });
    }

    #[test]
    fn reports_come_out_in_order_within_deadlines() {
        for stock in universe::all().iter().step_by(97) {
            let mut p = Period { year: 2015, quarter: 1 };
            while p.year < 2027 {
                let ann = stock.model.ann_date(p);
                let days = (ann - p.end()).num_days();
                assert!((15..=110).contains(&days), "{} {p:?}: {days}", stock.ts_code);
                assert!(stock.model.ann_date(p.prev()) < ann, "{} {p:?}", stock.ts_code);
                p = Period { year: p.year + p.quarter as i32 / 4, quarter: p.quarter % 4 + 1 };
            }
        }
    }

    #[test]
    fn every_bar_respects_the_limit_and_its_own_range() {
        for stock in universe::all().iter().step_by(53) {
            let limit = stock.board.limit();
            let first = calendar::index(stock.list_date).unwrap();
            for i in (first + 1..first + 3000).step_by(3) {
                let b = stock.model.bar(i);
                let up = round(b.pre_close * (1.0 + limit), 2);
                let down = round(b.pre_close * (1.0 - limit), 2);
                assert!(down <= b.low && b.low <= b.open.min(b.close), "{} {i}: {b:?}", stock.ts_code);
                assert!(b.open.max(b.close) <= b.high && b.high <= up, "{} {i}: {b:?}", stock.ts_code);
                assert!(b.close >= 1.0 && b.vol > 0.0 && b.amount > 0.0, "{} {i}: {b:?}", stock.ts_code);
            }
        }
    }

    #[test]
    fn well_known_codes_trade_near_their_real_levels() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).unwrap();
        let check = |code: &str, low: f64, high: f64, pe_range: Option<(f64, f64)>| {
            let model = &universe::find(code).unwrap().model;
            for day in calendar::open_days(d(2025, 1, 1), d(2026, 12, 31)) {
                let i = calendar::index(day).unwrap();
                let close = model.close(i);
                assert!((low..=high).contains(&close), "{code} {day}: {close}");
                if let Some((lo, hi)) = pe_range {
                    let pe = model.basic(day, i).pe_ttm.unwrap();
                    assert!((lo..=hi).contains(&pe), "{code} {day}: pe_ttm {pe}");
                }
            }
        };
        check("600519.SH", 1400.0, 1800.0, Some((20.0, 30.0)));
        check("000001.SZ", 10.0, 13.0, Some((3.0, 8.0)));
        let longi = &universe::find("601012.SH").unwrap().model;
        let day = d(2026, 4, 30);
        assert_eq!(longi.basic(day, calendar::index(day).unwrap()).pe_ttm, None, "a loss-maker has no P/E");
    }
}

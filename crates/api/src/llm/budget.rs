//! The soft daily token budget: tokens per user per UTC day, kept in memory and seeded from the
//! accounts DB's `llm` usage rows the first time a user is seen on a day (so a restart does not
//! reset it). Crossing the budget is logged once per user per day; nothing is refused.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use chrono::{NaiveDate, Utc};
use twilight_accounts::Accounts;
use uuid::Uuid;

use super::COMPLETION_ENDPOINT;

pub struct Budget {
    /// Tokens a user may spend per UTC day before the warning; 0 turns the warning off.
    limit: u64,
    tallies: Mutex<Tallies>,
}

/// Today's tallies only: the first use on a new day forgets the previous day's.
struct Tallies {
    day: NaiveDate,
    users: HashMap<Uuid, Tally>,
}

#[derive(Default)]
struct Tally {
    tokens: u64,
    warned: bool,
}

impl Tallies {
    fn on(&mut self, day: NaiveDate) -> &mut HashMap<Uuid, Tally> {
        if self.day != day {
            self.day = day;
            self.users.clear();
        }
        &mut self.users
    }
}

impl Budget {
    pub fn new(limit: u64) -> Budget {
        Budget { limit, tallies: Mutex::new(Tallies { day: Utc::now().date_naive(), users: HashMap::new() }) }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Makes sure today's tally of `user_id` exists, starting from the tokens the accounts DB already
    /// holds for today. Called before a completion is relayed, so the DB cannot hold its own row yet;
    /// a tally seeded meanwhile by a concurrent request wins. A user already past the budget when
    /// seeded (a restart) is not warned about again. If the DB cannot be read the tally starts at 0.
    pub async fn seed(&self, accounts: &dyn Accounts, user_id: Uuid) {
        let today = Utc::now().date_naive();
        if self.tallies().on(today).contains_key(&user_id) {
            return;
        }
        let midnight = today.and_time(chrono::NaiveTime::MIN).and_utc();
        let spent = match accounts.usage_by_day(user_id, midnight).await {
            Ok(days) => {
                days.iter().filter(|d| d.endpoint == COMPLETION_ENDPOINT).map(|d| u64::try_from(d.upstream_cost_pts).unwrap_or(0)).sum()
            }
            Err(error) => {
                tracing::warn!(%user_id, error = %error, "cannot read today's LLM usage; the budget tally starts at 0");
                0
            }
        };
        let over = self.limit > 0 && spent > self.limit;
        self.tallies().on(today).entry(user_id).or_insert(Tally { tokens: spent, warned: over });
    }

    /// Adds a finished completion's tokens to the user's tally for today. True when this took the
    /// user past the budget for the first time today, which is logged as a warning.
    pub fn add(&self, user_id: Uuid, tokens: u64) -> bool {
        let today = Utc::now().date_naive();
        let total = {
            let mut tallies = self.tallies();
            let tally = tallies.on(today).entry(user_id).or_default();
            tally.tokens = tally.tokens.saturating_add(tokens);
            if self.limit == 0 || tally.tokens <= self.limit || tally.warned {
                return false;
            }
            tally.warned = true;
            tally.tokens
        };
        tracing::warn!(%user_id, tokens = total, budget = self.limit, "daily LLM token budget exceeded");
        true
    }

    /// Tokens counted for `user_id` today.
    pub fn spent_today(&self, user_id: Uuid) -> u64 {
        self.tallies().on(Utc::now().date_naive()).get(&user_id).map_or(0, |t| t.tokens)
    }

    fn tallies(&self) -> MutexGuard<'_, Tallies> {
        self.tallies.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crossing_is_reported_once_a_day() {
        let budget = Budget::new(100);
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(!budget.add(alice, 60));
        assert!(!budget.add(alice, 40), "reaching the budget is not passing it");
        assert!(budget.add(alice, 1));
        assert!(!budget.add(alice, 500), "once a day");
        assert_eq!(budget.spent_today(alice), 601);
        assert!(!budget.add(bob, 100));
        assert!(budget.add(bob, 1));
    }

    #[test]
    fn a_new_day_starts_from_zero() {
        let budget = Budget::new(10);
        let alice = Uuid::new_v4();
        assert!(budget.add(alice, 11));
        budget.tallies().day = NaiveDate::from_ymd_opt(2000, 1, 1).unwrap();
        assert_eq!(budget.spent_today(alice), 0);
        assert!(budget.add(alice, 11), "warned again on a new day");
    }

    #[test]
    fn zero_turns_the_warning_off() {
        let budget = Budget::new(0);
        assert!(!budget.add(Uuid::new_v4(), u64::MAX));
    }
}

//! Each caller's request budget: every authenticated caller (a user, or an API key) may spend
//! [`Budget::per_minute`] a minute — a read costs 1, a write (any method but GET, HEAD and
//! OPTIONS) [`WRITE_COST`], as GitHub counts mutations — refilled continuously (GCRA, by the
//! `governor` crate: a caller who waits 1/limit of a minute has 1 more). Every answer to an
//! authenticated caller carries `ratelimit-limit`, `ratelimit-remaining` and
//! `ratelimit-reset` (seconds until the whole budget is back); over it, 429 with
//! `retry-after` (when this request's cost is back, at most 60 s) and `ratelimit-remaining: 0`.
//!
//! The budget is kept by each isolate, in memory: no round trip, exact for the callers an
//! isolate serves. The platform's rate-limiting binding only answers yes or no, so it could
//! not fill the headers. Anonymous routes (sign-up, login, refresh, invites' preview) are not
//! counted here; their failures are throttled per account and address
//! (`crate::domain::throttle`). A request with an invalid credential is answered 401 without
//! counting against anyone.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use governor::clock::Clock;
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use super::extract::authenticate;
use super::{ApiError, AppState};
use crate::auth::Caller;

/// The budget a minute when the deployment sets none.
pub const DEFAULT_PER_MINUTE: u32 = 1200;
/// What a write costs, in reads.
pub const WRITE_COST: u32 = 5;
/// The setting's name (a Worker variable).
pub const SETTING: &str = "BERTH_RATE_LIMIT";
/// The answer headers.
pub const LIMIT_HEADER: &str = "ratelimit-limit";
pub const REMAINING_HEADER: &str = "ratelimit-remaining";
pub const RESET_HEADER: &str = "ratelimit-reset";
/// After this many checks, callers whose budget is full again are forgotten.
const FORGET_EVERY: u32 = 4096;

/// A caller's budget a minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub per_minute: NonZeroU32,
}

impl Budget {
    /// The budget `BERTH_RATE_LIMIT` sets: unset → [`DEFAULT_PER_MINUTE`], `off` → none, else
    /// a positive number of requests a minute.
    pub fn from_setting(setting: Option<&str>) -> Result<Option<Budget>, String> {
        let Some(text) = setting.map(str::trim) else {
            return Ok(Some(Budget::per_minute(DEFAULT_PER_MINUTE)));
        };
        if text.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        text.parse::<NonZeroU32>()
            .map(|per_minute| Some(Budget { per_minute }))
            .map_err(|_| {
                format!("{SETTING} is {text:?}: expected a positive number of requests a minute, or off")
            })
    }

    /// A budget of `n` a minute (at least 1).
    pub fn per_minute(n: u32) -> Budget {
        Budget {
            per_minute: NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN),
        }
    }

    /// What a request with `method` costs (never more than the whole budget).
    pub fn cost(self, method: &Method) -> NonZeroU32 {
        let read = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        let cost = if read { 1 } else { WRITE_COST };
        NonZeroU32::new(cost.min(self.per_minute.get())).unwrap_or(NonZeroU32::MIN)
    }

    /// Seconds until `remaining` is the whole budget again.
    pub fn reset_seconds(self, remaining: u32) -> u64 {
        let limit = u64::from(self.per_minute.get());
        let spent = limit.saturating_sub(u64::from(remaining));
        (spent * 60).div_ceil(limit)
    }
}

/// What a caller's answer says of its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    pub limit: u32,
    pub remaining: u32,
    pub reset: u64,
}

impl Allowance {
    /// The `ratelimit-*` headers.
    pub fn headers(&self) -> [(&'static str, u64); 3] {
        [
            (LIMIT_HEADER, u64::from(self.limit)),
            (REMAINING_HEADER, u64::from(self.remaining)),
            (RESET_HEADER, self.reset),
        ]
    }

    /// Writes the `ratelimit-*` headers.
    pub fn write(&self, headers: &mut HeaderMap) {
        for (name, value) in self.headers() {
            headers.insert(name, HeaderValue::from(value));
        }
    }
}

/// The wall clock, as governor reads time (chrono's works on wasm32 too).
#[derive(Debug, Clone, Copy, Default)]
struct WallClock;

impl Clock for WallClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or(0);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
    }
}

type Limiter =
    RateLimiter<Caller, HashMapStateStore<Caller>, WallClock, StateInformationMiddleware>;

/// Every caller's budget, as one isolate (or one native server) keeps it.
pub struct RateLimits {
    budget: Budget,
    limiter: Limiter,
    checks: AtomicU32,
}

impl RateLimits {
    /// Budgets of `budget` a minute for every caller.
    pub fn new(budget: Budget) -> Arc<RateLimits> {
        let quota = Quota::per_minute(budget.per_minute);
        Arc::new(RateLimits {
            budget,
            limiter: Limiter::new(quota, HashMapStateStore::default(), WallClock),
            checks: AtomicU32::new(0),
        })
    }

    /// Spends what a `method` request costs from `caller`'s budget: what is left, or 429.
    pub fn spend(&self, caller: &Caller, method: &Method) -> Result<Allowance, ApiError> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % FORGET_EVERY == FORGET_EVERY - 1 {
            self.limiter.retain_recent();
        }
        let budget = self.budget;
        let limit = budget.per_minute.get();
        let refused = |retry_after| ApiError::RateLimited {
            retry_after,
            allowance: Allowance {
                limit,
                remaining: 0,
                reset: budget.reset_seconds(0),
            },
        };
        match self.limiter.check_key_n(caller, budget.cost(method)) {
            Ok(Ok(state)) => {
                let remaining = state.remaining_burst_capacity();
                Ok(Allowance {
                    limit,
                    remaining,
                    reset: budget.reset_seconds(remaining),
                })
            }
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(WallClock.now());
                Err(refused(wait.as_secs_f64().ceil().clamp(1.0, 60.0) as u64))
            }
            // The cost never exceeds the budget, so the limiter's "never fits" cannot happen.
            Err(_) => Err(refused(60)),
        }
    }
}

/// The caller a request's credential names, once authenticated by the rate limit (the
/// `Caller` extractor reads it rather than verifying the token again).
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub caller: Caller,
    pub until: Option<DateTime<Utc>>,
}

/// Spends the request's cost from its caller's budget, if the state keeps budgets and the
/// request names a valid caller: the allowance to write on the answer, or 429.
pub fn spend(
    st: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Option<(Authenticated, Allowance)>, ApiError> {
    let Some(limits) = st.limits.as_deref() else {
        return Ok(None);
    };
    let Ok((caller, until)) = authenticate(headers, st) else {
        return Ok(None);
    };
    let allowance = limits.spend(&caller, method)?;
    Ok(Some((Authenticated { caller, until }, allowance)))
}

/// Layer: every authenticated request spends from its caller's budget.
pub async fn rate_limit(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    match spend(&st, req.method(), req.headers()) {
        Ok(None) => next.run(req).await,
        Ok(Some((authenticated, allowance))) => {
            req.extensions_mut().insert(authenticated);
            let mut res = next.run(req).await;
            allowance.write(res.headers_mut());
            res
        }
        Err(over) => over.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::UserId;

    #[test]
    fn the_setting_is_a_budget_off_or_an_error() {
        assert_eq!(
            Budget::from_setting(None),
            Ok(Some(Budget::per_minute(DEFAULT_PER_MINUTE)))
        );
        assert_eq!(
            Budget::from_setting(Some(" 60 ")),
            Ok(Some(Budget::per_minute(60)))
        );
        assert_eq!(Budget::from_setting(Some("OFF")), Ok(None));
        for bad in ["0", "-1", "lots", "", "1e3", "99999999999"] {
            let e = Budget::from_setting(Some(bad)).expect_err(bad);
            assert!(e.contains(SETTING), "{e}");
        }
    }

    #[test]
    fn writes_cost_more_but_never_more_than_the_budget() {
        let b = Budget::per_minute(1200);
        assert_eq!(b.cost(&Method::GET).get(), 1);
        assert_eq!(b.cost(&Method::HEAD).get(), 1);
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert_eq!(b.cost(&m).get(), WRITE_COST);
        }
        assert_eq!(Budget::per_minute(3).cost(&Method::POST).get(), 3);
    }

    #[test]
    fn reset_is_the_time_to_refill_what_was_spent() {
        let b = Budget::per_minute(1200);
        assert_eq!(b.reset_seconds(1200), 0);
        assert_eq!(b.reset_seconds(1199), 1);
        assert_eq!(b.reset_seconds(600), 30);
        assert_eq!(b.reset_seconds(0), 60);
    }

    #[test]
    fn a_caller_over_budget_is_refused_and_others_are_not() {
        let limits = RateLimits::new(Budget::per_minute(10));
        let alice = Caller::User(UserId::new());
        let bob = Caller::ApiKey(vec![1, 2, 3]);
        let first = limits.spend(&alice, &Method::GET).expect("within");
        assert_eq!(
            first,
            Allowance {
                limit: 10,
                remaining: 9,
                reset: 6
            }
        );
        let after_write = limits.spend(&alice, &Method::POST).expect("within");
        assert_eq!(after_write.remaining, 4);
        // Another write needs 5; reads go on until none is left.
        assert!(limits.spend(&alice, &Method::POST).is_err());
        for left in (0..4).rev() {
            assert_eq!(
                limits.spend(&alice, &Method::GET).expect("read").remaining,
                left
            );
        }
        match limits.spend(&alice, &Method::GET) {
            Err(ApiError::RateLimited {
                retry_after,
                allowance,
            }) => {
                // One read comes back in 6 s.
                assert!((1..=6).contains(&retry_after), "{retry_after}");
                assert_eq!(allowance.remaining, 0);
                assert_eq!(allowance.reset, 60);
            }
            other => panic!("expected 429, got {other:?}"),
        }
        assert_eq!(
            limits.spend(&bob, &Method::DELETE).expect("bob").remaining,
            5
        );
    }
}

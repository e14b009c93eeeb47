//! The replica side's brake on sync requests: one request per row within a window, and a
//! token bucket over all rows.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::config::GapRepairConfig;

/// What the limiter says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Send it.
    Go,
    /// The row was asked for within the window: its answer is probably on the way.
    Outstanding,
    /// Too many requests over all rows right now.
    RateLimited,
}

/// Remembers the rows asked for recently and the budget left.
///
/// Only admitted requests are remembered, and the bucket admits at most
/// `burst + rate × window` of them per window, so memory stays bounded however many gaps the
/// replica sees.
pub(crate) struct Limiter {
    window: Duration,
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
    asked: HashMap<(String, String), Instant>,
    order: VecDeque<(Instant, (String, String))>,
}

impl Limiter {
    pub fn new(settings: &GapRepairConfig, now: Instant) -> Self {
        let burst = f64::from(settings.burst());
        Self {
            window: settings.request_window(),
            rate: settings.max_requests_per_second(),
            burst,
            tokens: burst,
            refilled: now,
            asked: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Whether a request about row `pk` of `cqrs_id` may go at `now`; remembers it if so.
    pub fn admit(&mut self, cqrs_id: &str, pk: &str, now: Instant) -> Admit {
        self.forget_before(now);
        let key = (cqrs_id.to_owned(), pk.to_owned());
        if self.asked.contains_key(&key) {
            return Admit::Outstanding;
        }
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.refilled = now;
        if self.tokens < 1.0 {
            return Admit::RateLimited;
        }
        self.tokens -= 1.0;
        self.asked.insert(key.clone(), now);
        self.order.push_back((now, key));
        Admit::Go
    }

    /// Forgets the rows asked for a window or more before `now`.
    fn forget_before(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.window {
                break;
            }
            if let Some((at, key)) = self.order.pop_front()
                && self.asked.get(&key) == Some(&at)
            {
                self.asked.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(window_s: u64, rate: f64, burst: u32) -> (Limiter, Instant) {
        let now = Instant::now();
        let settings = GapRepairConfig::default()
            .with_request_window(Duration::from_secs(window_s))
            .with_max_requests_per_second(rate)
            .with_burst(burst);
        (Limiter::new(&settings, now), now)
    }

    #[test]
    fn one_request_per_row_within_the_window() {
        let (mut l, t0) = limiter(10, 100.0, 100);
        assert_eq!(l.admit("book", "1", t0), Admit::Go);
        assert_eq!(l.admit("book", "1", t0), Admit::Outstanding);
        assert_eq!(
            l.admit("book", "1", t0 + Duration::from_secs(9)),
            Admit::Outstanding
        );
        assert_eq!(l.admit("book", "2", t0), Admit::Go);
        assert_eq!(l.admit("author", "1", t0), Admit::Go);
        assert_eq!(
            l.admit("book", "1", t0 + Duration::from_secs(10)),
            Admit::Go
        );
    }

    #[test]
    fn the_bucket_limits_all_rows_together_and_refills() {
        let (mut l, t0) = limiter(60, 2.0, 3);
        for pk in 0..3 {
            assert_eq!(l.admit("book", &pk.to_string(), t0), Admit::Go);
        }
        assert_eq!(l.admit("book", "3", t0), Admit::RateLimited);
        // A refused row is not remembered: it may ask again once there is budget.
        let later = t0 + Duration::from_millis(500);
        assert_eq!(l.admit("book", "3", later), Admit::Go);
        assert_eq!(l.admit("book", "4", later), Admit::RateLimited);
    }

    #[test]
    fn memory_is_bounded_by_what_was_admitted() {
        let (mut l, t0) = limiter(1, 1000.0, 10);
        for i in 0..10_000u64 {
            let now = t0 + Duration::from_millis(i);
            let _ = l.admit("book", &i.to_string(), now);
        }
        assert!(l.asked.len() <= 1010, "{}", l.asked.len());
        assert_eq!(l.asked.len(), l.order.len());
    }
}

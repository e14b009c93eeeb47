//! Retry policies: how often and after how long a failed message is tried again before it goes
//! to the dead-letter queue.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;

/// How the delay grows from one retry to the next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backoff {
    /// The same delay every time (django-cqrs: `CQRS_RETRY_DELAY`, 2 s).
    Constant(Duration),
    /// `initial * factor^retries`, capped at `max`, then spread by ±`jitter` (a fraction in
    /// `0.0..=1.0`) so that many failing messages do not come back at the same instant.
    Exponential {
        /// Delay of the first retry.
        initial: Duration,
        /// Growth per retry (≥ 1).
        factor: f64,
        /// Cap.
        max: Duration,
        /// Spread, as a fraction of the delay.
        jitter: f64,
    },
}

impl Backoff {
    /// The delay before retry number `retries + 1`.
    #[must_use]
    pub fn delay(&self, retries: u32) -> Duration {
        match *self {
            Backoff::Constant(d) => d,
            Backoff::Exponential {
                initial,
                factor,
                max,
                jitter,
            } => {
                let exp = factor.powi(i32::try_from(retries).unwrap_or(i32::MAX));
                let base = (initial.as_secs_f64() * exp).min(max.as_secs_f64());
                let spread = if jitter > 0.0 {
                    (fastrand::f64() * 2.0 - 1.0) * jitter
                } else {
                    0.0
                };
                Duration::from_secs_f64((base * (1.0 + spread)).clamp(0.0, max.as_secs_f64()))
            }
        }
    }
}

/// What to do with a message that failed.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryDecision {
    /// Park a copy with `retries + 1` for `delay`.
    Retry {
        /// How long the copy stays parked.
        delay: Duration,
    },
    /// Send it to the dead-letter queue.
    DeadLetter {
        /// The `x-cqrs-reason` header value.
        reason: &'static str,
    },
}

/// A user decision hook: `(retries so far, error) -> retry?`, the analogue of django-cqrs's
/// `should_retry_cqrs`. It is asked only for errors whose kind is retryable.
pub type ShouldRetry = Arc<dyn Fn(u32, &Error) -> bool + Send + Sync>;

/// How a failed message of one CQRS id is retried.
///
/// The default is django-cqrs's: 30 retries, 2 s apart.
#[derive(Clone)]
pub struct RetryPolicy {
    max_retries: Option<u32>,
    backoff: Backoff,
    should_retry: Option<ShouldRetry>,
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_retries", &self.max_retries)
            .field("backoff", &self.backoff)
            .field("should_retry", &self.should_retry.as_ref().map(|_| "<fn>"))
            .finish()
    }
}

impl PartialEq for RetryPolicy {
    fn eq(&self, other: &Self) -> bool {
        self.max_retries == other.max_retries
            && self.backoff == other.backoff
            && self.should_retry.is_none()
            && other.should_retry.is_none()
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::constant(30, Duration::from_secs(2))
    }
}

/// Reason header value of a message whose retries ran out.
pub const REASON_RETRIES_EXHAUSTED: &str = "retries_exhausted";

impl RetryPolicy {
    /// `max_retries` retries, `delay` apart.
    #[must_use]
    pub fn constant(max_retries: u32, delay: Duration) -> Self {
        Self {
            max_retries: Some(max_retries),
            backoff: Backoff::Constant(delay),
            should_retry: None,
        }
    }

    /// `max_retries` retries with exponential backoff: `initial`, doubling, capped at `max`,
    /// with 20 % jitter.
    #[must_use]
    pub fn exponential(max_retries: u32, initial: Duration, max: Duration) -> Self {
        Self {
            max_retries: Some(max_retries),
            backoff: Backoff::Exponential {
                initial,
                factor: 2.0,
                max,
                jitter: 0.2,
            },
            should_retry: None,
        }
    }

    /// Retries for ever (django-cqrs: `CQRS_MAX_RETRIES = None`); only non-retryable errors and
    /// expiry end in the dead-letter queue.
    #[must_use]
    pub fn forever(backoff: Backoff) -> Self {
        Self {
            max_retries: None,
            backoff,
            should_retry: None,
        }
    }

    /// Sets the retry limit (`None` = for ever).
    #[must_use]
    pub fn with_max_retries(mut self, max_retries: Option<u32>) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// Sets the backoff.
    #[must_use]
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Adds a hook that may refuse a retry for a retryable error.
    #[must_use]
    pub fn with_should_retry(
        mut self,
        hook: impl Fn(u32, &Error) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.should_retry = Some(Arc::new(hook));
        self
    }

    /// The retry limit (`None` = for ever).
    #[must_use]
    pub fn max_retries(&self) -> Option<u32> {
        self.max_retries
    }

    /// The backoff.
    #[must_use]
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// Decides the fate of a message that failed with `error` after `retries` retries: a retry
    /// while `retries < max_retries` and the error is retryable, else a dead letter.
    #[must_use]
    pub fn decide(&self, retries: u32, error: &Error) -> RetryDecision {
        if !error.is_retryable() {
            return RetryDecision::DeadLetter {
                reason: error.kind().as_str(),
            };
        }
        if self.max_retries.is_some_and(|max| retries >= max) {
            return RetryDecision::DeadLetter {
                reason: REASON_RETRIES_EXHAUSTED,
            };
        }
        if let Some(hook) = &self.should_retry
            && !hook(retries, error)
        {
            return RetryDecision::DeadLetter {
                reason: REASON_RETRIES_EXHAUSTED,
            };
        }
        RetryDecision::Retry {
            delay: self.backoff.delay(retries),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn django_defaults() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_retries(), Some(30));
        let err = Error::handler("boom");
        assert_eq!(
            p.decide(0, &err),
            RetryDecision::Retry {
                delay: Duration::from_secs(2)
            }
        );
        assert_eq!(
            p.decide(29, &err),
            RetryDecision::Retry {
                delay: Duration::from_secs(2)
            }
        );
        assert_eq!(
            p.decide(30, &err),
            RetryDecision::DeadLetter {
                reason: REASON_RETRIES_EXHAUSTED
            }
        );
    }

    #[test]
    fn non_retryable_errors_go_straight_to_dead_letters() {
        let p = RetryPolicy::forever(Backoff::Constant(Duration::from_secs(1)));
        assert_eq!(
            p.decide(0, &Error::invalid_data("no pk")),
            RetryDecision::DeadLetter {
                reason: "invalid_data"
            }
        );
        assert!(matches!(
            p.decide(1_000_000, &Error::handler("x")),
            RetryDecision::Retry { .. }
        ));
    }

    #[test]
    fn exponential_backoff_grows_and_is_capped() {
        let b = Backoff::Exponential {
            initial: Duration::from_millis(100),
            factor: 2.0,
            max: Duration::from_secs(1),
            jitter: 0.0,
        };
        assert_eq!(b.delay(0), Duration::from_millis(100));
        assert_eq!(b.delay(3), Duration::from_millis(800));
        assert_eq!(b.delay(10), Duration::from_secs(1));
        let jittered =
            RetryPolicy::exponential(5, Duration::from_millis(100), Duration::from_secs(10));
        for _ in 0..100 {
            let d = jittered.backoff().delay(1);
            assert!(
                d >= Duration::from_millis(160) && d <= Duration::from_millis(240),
                "{d:?}"
            );
        }
    }

    #[test]
    fn a_hook_can_refuse() {
        let p = RetryPolicy::default().with_should_retry(|retries, _| retries < 1);
        assert!(matches!(
            p.decide(0, &Error::handler("x")),
            RetryDecision::Retry { .. }
        ));
        assert!(matches!(
            p.decide(1, &Error::handler("x")),
            RetryDecision::DeadLetter { .. }
        ));
    }
}

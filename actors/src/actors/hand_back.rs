//! [`HandBack`]: how the replica gives a delivery back to the broker when neither a retry copy
//! nor a dead letter could be published.
//!
//! Handing back at once makes a hot loop when the failure repeats (a deleted queue, a broker
//! that refuses the message): the broker redelivers within a millisecond and the publish fails
//! again, thousands of times a second. So the delivery is held for a pause first, which doubles
//! with each failure in a row (100 ms up to 5 s) and starts again after a success, and the
//! failure is logged once per interval with the count of those not logged.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::error::Error;
use crate::transport::{DeliveryTag, Settlement, TransportHandle};

/// The first pause before a delivery is handed back.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause; also bounds how long a shutdown waits for a held delivery.
const MAX_PAUSE: Duration = Duration::from_secs(5);
/// At most one log line per interval about failures of the same kind.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Default)]
struct State {
    /// Failures in a row.
    failures: u32,
    /// When a failure was last logged, and how many were not logged since.
    logged: Option<Instant>,
    unlogged: u64,
}

/// The backoff and the log throttle of one kind of publish: the Retrier and the DeadLetterer
/// each have their own.
#[derive(Default)]
pub(crate) struct HandBack {
    state: Mutex<State>,
    hurry: Notify,
}

impl HandBack {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A publish went through: the next failure starts from the first pause.
    pub fn succeeded(&self) {
        self.state().failures = 0;
    }

    /// Cuts every pause short (a drain or shutdown is waiting).
    pub fn hurry(&self) {
        self.hurry.notify_waiters();
    }

    /// The pause before this failure's hand-back, and whether to log it (with the number of
    /// failures not logged since the last line).
    fn fail(&self) -> (Duration, Option<u64>) {
        let mut s = self.state();
        s.failures = s.failures.saturating_add(1);
        let pause = FIRST_PAUSE
            .saturating_mul(1 << (s.failures - 1).min(10))
            .min(MAX_PAUSE);
        let now = Instant::now();
        let log = match s.logged {
            Some(at) if now.duration_since(at) < LOG_INTERVAL => {
                s.unlogged += 1;
                None
            }
            _ => {
                s.logged = Some(now);
                Some(std::mem::take(&mut s.unlogged))
            }
        };
        (pause, log)
    }

    /// Waits the pause this failure earns, then hands `tag` back for redelivery. `what` says
    /// what could not be published (`"dead letter"`, `"retry copy"`).
    pub async fn after_failure(
        &self,
        transport: &TransportHandle,
        tag: DeliveryTag,
        what: &'static str,
        error: &Error,
        span: &tracing::Span,
    ) {
        // Registered before the pause is chosen, so a drain that starts meanwhile is not missed.
        let hurried = self.hurry.notified();
        let (pause, log) = self.fail();
        if let Some(unlogged) = log {
            span.in_scope(|| {
                tracing::error!(
                    error = %error,
                    pause_ms = pause.as_millis() as u64,
                    similar_failures_not_logged = unlogged,
                    "{what} not published; handing the message back for redelivery after a pause"
                );
            });
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = hurried => {}
        }
        if let Err(e) = transport.settle(vec![tag], Settlement::Requeue).await {
            tracing::debug!(error = %e, "requeue failed; the delivery comes back when its consumer is released");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_cap_and_logs_are_throttled() {
        let h = HandBack::default();
        let (first, log) = h.fail();
        assert_eq!(first, FIRST_PAUSE);
        assert_eq!(log, Some(0), "the first failure is logged");
        let (second, log) = h.fail();
        assert_eq!(second, FIRST_PAUSE * 2);
        assert_eq!(
            log, None,
            "the next one within the interval is counted, not logged"
        );
        for _ in 0..20 {
            h.fail();
        }
        assert_eq!(h.fail().0, MAX_PAUSE);
        h.succeeded();
        assert_eq!(h.fail().0, FIRST_PAUSE, "a success starts the pauses again");
        assert_eq!(h.state().unlogged, 23);
    }
}

//! The `[gap_repair]` section: how often a replica may ask a master for a row's current state
//! (see the `gap_repair` module). Whether a replica model asks at all is per model:
//! `[models.<id>] gap_repair = true` or `ReplicaModel::with_gap_repair`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The `[gap_repair]` section: the replica side's limits on sync requests.
///
/// ```toml
/// [gap_repair]
/// request_window = 60.0          # seconds: at most one request per row in this window
/// max_requests_per_second = 10.0 # all rows together, sustained
/// burst = 20                     # all rows together, at once
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GapRepairConfig {
    request_window: f64,
    max_requests_per_second: f64,
    burst: u32,
}

impl Default for GapRepairConfig {
    /// One request per row a minute, 10 a second overall with bursts of 20: a replica that
    /// lost a whole batch asks for its rows over a few seconds instead of flooding the master,
    /// and a row whose answer was itself lost is asked for again a minute later.
    fn default() -> Self {
        Self {
            request_window: 60.0,
            max_requests_per_second: 10.0,
            burst: 20,
        }
    }
}

impl GapRepairConfig {
    /// How long a row asked for is not asked for again; default 60 s.
    #[must_use]
    pub fn request_window(&self) -> Duration {
        Duration::from_secs_f64(self.request_window)
    }

    /// Sustained requests per second over all rows; default 10.
    #[must_use]
    pub fn max_requests_per_second(&self) -> f64 {
        self.max_requests_per_second
    }

    /// Requests that may go at once over all rows before the rate applies; default 20.
    #[must_use]
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Sets `request_window`.
    #[must_use]
    pub fn with_request_window(mut self, window: Duration) -> Self {
        self.request_window = window.as_secs_f64();
        self
    }

    /// Sets `max_requests_per_second`.
    #[must_use]
    pub fn with_max_requests_per_second(mut self, rate: f64) -> Self {
        self.max_requests_per_second = rate;
        self
    }

    /// Sets `burst`.
    #[must_use]
    pub fn with_burst(mut self, burst: u32) -> Self {
        self.burst = burst;
        self
    }

    /// Checks the numbers; the error names the key.
    pub(super) fn validate(&self) -> Result<()> {
        if !(self.request_window.is_finite()
            && self.request_window >= 0.0
            && self.request_window < 1e9)
        {
            return Err(Error::config(
                "gap_repair.request_window",
                "must be a number of seconds ≥ 0",
            ));
        }
        if !(self.max_requests_per_second.is_finite() && self.max_requests_per_second > 0.0) {
            return Err(Error::config(
                "gap_repair.max_requests_per_second",
                "must be a positive number",
            ));
        }
        if self.burst == 0 {
            return Err(Error::config("gap_repair.burst", "must be at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CqrsConfig;

    #[test]
    fn read_from_the_file_and_the_environment_and_off_by_default() {
        let text = "[models.author]\ngap_repair = true\n[gap_repair]\nrequest_window = 5.0\n";
        let env = [("CQRS_GAP_REPAIR__BURST".to_owned(), "3".to_owned())];
        let c = CqrsConfig::from_sources(text, env).unwrap();
        assert!(c.gap_repair_enabled("author"));
        assert!(!c.gap_repair_enabled("book"));
        assert!(
            !c.has_model_settings("author"),
            "gap_repair is no retry setting"
        );
        assert_eq!(c.gap_repair().request_window(), Duration::from_secs(5));
        assert_eq!(c.gap_repair().burst(), 3);
        assert!(!CqrsConfig::default().gap_repair_enabled("author"));
        let err = CqrsConfig::from_toml_str("[gap_repair]\nburst = 0").unwrap_err();
        assert!(err.to_string().contains("gap_repair.burst"), "{err}");
    }

    #[test]
    fn defaults_validate_and_bad_numbers_name_their_key() {
        assert!(GapRepairConfig::default().validate().is_ok());
        let bad = GapRepairConfig::default().with_max_requests_per_second(0.0);
        let err = bad.validate().unwrap_err();
        assert!(err.to_string().contains("max_requests_per_second"), "{err}");
        assert!(GapRepairConfig::default().with_burst(0).validate().is_err());
    }
}

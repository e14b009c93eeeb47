//! Liveness and readiness of a service's cqrs-sync side, for Kubernetes probes: see
//! [`CqrsSystem::health`](crate::CqrsSystem::health).

use serde::Serialize;

/// Which probe a check counts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Probe {
    /// Failing means the process should be restarted (`/healthz`).
    Live,
    /// Failing means the process should get no traffic for now (`/readyz`); a live process
    /// comes back by itself once what it waits for is back.
    Ready,
}

/// One check and its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked: `transport`, `database:<cqrs_id>`, `outbox:<name>`, `workers`,
    /// `consumer`.
    pub name: String,
    /// The probe it counts for.
    pub probe: Probe,
    /// Whether it passed.
    pub ok: bool,
    /// What was seen (the error when it failed).
    pub detail: String,
}

/// The checks of one [`CqrsSystem::health`](crate::CqrsSystem::health) call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Health {
    /// Every check, in a stable order.
    pub checks: Vec<Check>,
}

impl Health {
    /// Every liveness check passed.
    #[must_use]
    pub fn live(&self) -> bool {
        self.checks
            .iter()
            .filter(|c| c.probe == Probe::Live)
            .all(|c| c.ok)
    }

    /// Live, and every readiness check passed.
    #[must_use]
    pub fn ready(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.ok)
    }

    pub(crate) fn push(
        &mut self,
        name: impl Into<String>,
        probe: Probe,
        result: Result<String, String>,
    ) {
        let (ok, detail) = match result {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        self.checks.push(Check {
            name: name.into(),
            probe,
            ok,
            detail,
        });
    }
}

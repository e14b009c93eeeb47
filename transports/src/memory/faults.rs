//! Seeded fault injection for the memory transport, so users can test that their replicas
//! converge when a real broker misbehaves in the ways brokers do.

use std::time::Duration;

/// Which faults the memory transport injects, and how often (each a probability per delivery).
///
/// - **drop**: the delivery is lost on its way to the consumer (a connection dying mid-flight);
///   the broker still holds it and delivers it again after `redelivery_after`, marked
///   redelivered. Nothing is lost from the broker, as with AMQP.
/// - **duplicate**: the message is delivered, and a second copy marked redelivered follows.
/// - **delay**: the message is held back up to `max_delay` and then put at the end of its
///   queue (which also reorders it).
/// - **reorder**: the next delivery is taken from a random position among the first
///   `reorder_window` ready messages instead of the head.
/// - **redeliver**: an acknowledgement is lost, so the broker delivers the message again.
///
/// The same seed gives the same decisions for the same sequence of operations.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultPlan {
    seed: u64,
    drop: f64,
    duplicate: f64,
    delay: f64,
    max_delay: Duration,
    reorder: f64,
    reorder_window: usize,
    redeliver: f64,
    redelivery_after: Duration,
}

impl Default for FaultPlan {
    fn default() -> Self {
        Self {
            seed: 0,
            drop: 0.0,
            duplicate: 0.0,
            delay: 0.0,
            max_delay: Duration::from_millis(20),
            reorder: 0.0,
            reorder_window: 8,
            redeliver: 0.0,
            redelivery_after: Duration::from_millis(20),
        }
    }
}

impl FaultPlan {
    /// No faults, with `seed` for when some are turned on.
    #[must_use]
    pub fn seeded(seed: u64) -> Self {
        Self {
            seed,
            ..Self::default()
        }
    }

    /// The seed.
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Probability that a delivery is lost in flight (and redelivered later).
    #[must_use]
    pub fn with_drop(mut self, p: f64) -> Self {
        self.drop = clamp(p);
        self
    }

    /// Probability that a delivery is duplicated.
    #[must_use]
    pub fn with_duplicate(mut self, p: f64) -> Self {
        self.duplicate = clamp(p);
        self
    }

    /// Probability that a delivery is held back, and for at most how long.
    #[must_use]
    pub fn with_delay(mut self, p: f64, max_delay: Duration) -> Self {
        self.delay = clamp(p);
        self.max_delay = max_delay;
        self
    }

    /// Probability that a delivery is taken out of order, and from how far.
    #[must_use]
    pub fn with_reorder(mut self, p: f64, window: usize) -> Self {
        self.reorder = clamp(p);
        self.reorder_window = window.max(1);
        self
    }

    /// Probability that an acknowledgement is lost (the message comes again).
    #[must_use]
    pub fn with_redeliver(mut self, p: f64) -> Self {
        self.redeliver = clamp(p);
        self
    }

    /// How long a dropped delivery takes to come back.
    #[must_use]
    pub fn with_redelivery_after(mut self, after: Duration) -> Self {
        self.redelivery_after = after;
        self
    }

    pub(crate) fn redelivery_after(&self) -> Duration {
        self.redelivery_after
    }

    pub(crate) fn is_active(&self) -> bool {
        self.drop > 0.0
            || self.duplicate > 0.0
            || self.delay > 0.0
            || self.reorder > 0.0
            || self.redeliver > 0.0
    }
}

fn clamp(p: f64) -> f64 {
    if p.is_finite() {
        p.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// What happens to one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    Deliver,
    Drop,
    Duplicate,
    Delay(Duration),
}

/// The seeded decisions.
#[derive(Debug)]
pub(crate) struct Faults {
    plan: FaultPlan,
    rng: fastrand::Rng,
}

impl Faults {
    pub fn new(plan: FaultPlan) -> Self {
        let rng = fastrand::Rng::with_seed(plan.seed);
        Self { plan, rng }
    }

    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    pub fn fate(&mut self) -> Fate {
        if !self.plan.is_active() {
            return Fate::Deliver;
        }
        let p = self.rng.f64();
        let mut edge = self.plan.drop;
        if p < edge {
            return Fate::Drop;
        }
        edge += self.plan.duplicate;
        if p < edge {
            return Fate::Duplicate;
        }
        edge += self.plan.delay;
        if p < edge {
            let ms = self.plan.max_delay.as_millis().max(1) as u64;
            return Fate::Delay(Duration::from_millis(self.rng.u64(0..=ms)));
        }
        Fate::Deliver
    }

    /// Index of the next message to deliver among `ready` ones.
    pub fn pick(&mut self, ready: usize) -> usize {
        if ready > 1 && self.plan.reorder > 0.0 && self.rng.f64() < self.plan.reorder {
            self.rng.usize(0..ready.min(self.plan.reorder_window))
        } else {
            0
        }
    }

    pub fn ack_lost(&mut self) -> bool {
        self.plan.redeliver > 0.0 && self.rng.f64() < self.plan.redeliver
    }
}

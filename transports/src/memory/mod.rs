//! The in-memory transport: a broker inside the process with the routing of WIRE.md section 3,
//! acknowledgements, redelivery, parking with a delay, dead-letter queues and seeded fault
//! injection. For tests, examples and the quick start; nothing survives the process.
//!
//! ```
//! # #[actix_rt::main]
//! # async fn main() {
//! use cqrs_transports::memory::{FaultPlan, MemoryBroker};
//! let (transport, _broker) = MemoryBroker::new(FaultPlan::seeded(7).with_duplicate(0.1)).start_transport();
//! assert_eq!(transport.name(), "memory");
//! # }
//! ```

mod broker;
mod dispatch;
mod faults;
mod operator;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use actix::prelude::*;
use cqrs_actors::TransportHandle;
use cqrs_actors::transport::ConsumerTag;

pub use broker::ParkRecord;
use broker::{Consumer, Message, Queue};
pub use dispatch::ParkLog;
pub use faults::FaultPlan;
use faults::Faults;

/// The in-memory broker actor. It implements the whole transport protocol.
pub struct MemoryBroker {
    queues: HashMap<String, Queue>,
    bindings: HashMap<String, BTreeSet<String>>,
    consumers: BTreeMap<ConsumerTag, Consumer>,
    unacked: HashMap<u64, (ConsumerTag, String, Message)>,
    next_tag: u64,
    next_consumer: u64,
    next_seq: u64,
    faults: Faults,
    parked: Vec<ParkRecord>,
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new(FaultPlan::default())
    }
}

thread_local! {
    /// The brokers of `memory://` URLs, by URL, on this thread (an actix system runs its
    /// actors on one).
    static SHARED: std::cell::RefCell<HashMap<String, Addr<MemoryBroker>>> =
        std::cell::RefCell::new(HashMap::new());
}

/// The broker `url` names on this thread, started on first use (and again once it stopped).
pub(crate) fn shared(url: &str) -> TransportHandle {
    let key = url.trim_end_matches('/').to_ascii_lowercase();
    SHARED.with(|shared| {
        let mut shared = shared.borrow_mut();
        let addr = match shared.get(&key) {
            Some(addr) if addr.connected() => addr.clone(),
            _ => {
                let addr = MemoryBroker::default().start();
                shared.insert(key, addr.clone());
                addr
            }
        };
        TransportHandle::new("memory", &addr)
    })
}

impl MemoryBroker {
    /// A broker that injects the faults of `plan`.
    #[must_use]
    pub fn new(plan: FaultPlan) -> Self {
        Self {
            queues: HashMap::new(),
            bindings: HashMap::new(),
            consumers: BTreeMap::new(),
            unacked: HashMap::new(),
            next_tag: 0,
            next_consumer: 0,
            next_seq: 0,
            faults: Faults::new(plan),
            parked: Vec::new(),
        }
    }

    /// Starts the broker and returns the transport handle and its address.
    ///
    /// Each call starts a broker of its own; systems that connect by URL share the broker of
    /// their URL (`memory://` or `memory://<name>`) within one actix system.
    #[must_use]
    pub fn start_transport(self) -> (TransportHandle, Addr<MemoryBroker>) {
        let addr = self.start();
        (TransportHandle::new("memory", &addr), addr)
    }
}

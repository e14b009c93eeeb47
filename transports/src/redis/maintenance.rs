//! The background work of a transport: the mover brings due parked copies back to their
//! streams, the trimmer keeps streams bounded without losing what a group still needs, and
//! consumers that left with nothing pending are deleted. Each step is a script, so any number
//! of processes may run them on the same exchange.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::Value;
use ::redis::aio::ConnectionManager;
use tokio::sync::{Notify, watch};

use super::keys::{Keys, bytes, int};
use super::{Local, RedisConfig, lock, scripts};

/// The parked sets this process moves: (parked set, target stream).
pub(crate) type Movers = Arc<Mutex<BTreeSet<(String, String)>>>;

/// What the background tasks share with the actor.
#[derive(Clone)]
pub(crate) struct Maintenance {
    pub config: Arc<RedisConfig>,
    pub keys: Keys,
    pub control: ConnectionManager,
    pub movers: Movers,
    pub mover_wake: Arc<Notify>,
    pub local: Arc<Mutex<Local>>,
    pub stop: watch::Receiver<bool>,
}

impl Maintenance {
    /// Starts the mover and the trimmer; they end when `stop` turns true or its sender is
    /// dropped.
    pub(crate) fn spawn(self) {
        actix::spawn(self.clone().mover());
        actix::spawn(self.trimmer());
    }

    async fn mover(mut self) {
        const LIMIT: u32 = 500;
        loop {
            let targets: Vec<(String, String)> = lock(&self.movers).iter().cloned().collect();
            let mut pause = self.config.mover_interval;
            for (parked, stream) in targets {
                let moved: Result<(i64, i64), _> = scripts::MOVE
                    .key(&parked)
                    .key(&stream)
                    .arg(LIMIT)
                    .invoke_async(&mut self.control)
                    .await;
                match moved {
                    Ok((n, _)) if n >= i64::from(LIMIT) => pause = Duration::ZERO,
                    Ok((_, wait)) if wait >= 0 => {
                        pause = pause.min(Duration::from_millis(wait.unsigned_abs()));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, key = %parked, "moving due parked copies failed; trying again");
                    }
                }
            }
            let pause = pause.max(Duration::from_millis(5));
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = self.mover_wake.notified() => {}
                _ = self.stop.changed() => return,
            }
            if *self.stop.borrow() {
                return;
            }
        }
    }

    async fn trimmer(mut self) {
        const GC_EVERY: u32 = 12;
        let mut round = 0u32;
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.config.trim_interval) => {}
                _ = self.stop.changed() => return,
            }
            if *self.stop.borrow() {
                return;
            }
            if let Err(e) = self.trim_all().await {
                tracing::warn!(error = %e, "trimming the streams failed; trying again");
            }
            round += 1;
            if round.is_multiple_of(GC_EVERY)
                && let Err(e) = self.delete_gone_consumers().await
            {
                tracing::warn!(error = %e, "deleting consumers that left failed; trying again");
            }
        }
    }

    /// Trims every stream of the exchange once. Returns the entries trimmed.
    pub(crate) async fn trim_all(&mut self) -> Result<u64, ::redis::RedisError> {
        let streams: Vec<String> = ::redis::cmd("SMEMBERS")
            .arg(self.keys.streams())
            .query_async(&mut self.control)
            .await?;
        let c = &self.config;
        let mut trimmed = 0;
        for key in streams {
            let n: i64 = scripts::TRIM
                .key(&key)
                .arg(u8::from(c.keep_acknowledged))
                .arg(
                    c.max_age
                        .map_or(0, |a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX)),
                )
                .arg(c.max_len.unwrap_or(0))
                .arg(u8::from(c.trim_undelivered))
                .invoke_async(&mut self.control)
                .await?;
            if n > 0 {
                tracing::debug!(key = %key, entries = n, "trimmed");
            }
            trimmed += n.unsigned_abs();
        }
        Ok(trimmed)
    }

    /// Deletes the consumers idle longer than `consumer_gc_idle` that hold nothing pending
    /// and are not alive in this process.
    pub(crate) async fn delete_gone_consumers(&mut self) -> Result<u64, ::redis::RedisError> {
        let idle_limit =
            i64::try_from(self.config.consumer_gc_idle.as_millis()).unwrap_or(i64::MAX);
        let streams: Vec<String> = ::redis::cmd("SMEMBERS")
            .arg(self.keys.streams())
            .query_async(&mut self.control)
            .await?;
        let mut deleted = 0;
        for key in streams {
            let groups: Value = match ::redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(&key)
                .query_async(&mut self.control)
                .await
            {
                Ok(g) => g,
                Err(e) if e.code() == Some("ERR") => continue,
                Err(e) => return Err(e),
            };
            for group in field_values(&groups, "name") {
                let live: HashSet<String> = lock(&self.local)
                    .live
                    .get(&group)
                    .cloned()
                    .unwrap_or_default();
                let consumers: Value = ::redis::cmd("XINFO")
                    .arg("CONSUMERS")
                    .arg(&key)
                    .arg(&group)
                    .query_async(&mut self.control)
                    .await?;
                for info in records(&consumers) {
                    let name = info.get("name").cloned().unwrap_or_default();
                    let idle: i64 = info.get("idle").and_then(|v| v.parse().ok()).unwrap_or(0);
                    let pending: i64 = info
                        .get("pending")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(1);
                    if pending == 0 && idle >= idle_limit && !live.contains(&name) {
                        let n: i64 = scripts::DELETE_CONSUMER
                            .key(&key)
                            .arg(&group)
                            .arg(&name)
                            .invoke_async(&mut self.control)
                            .await?;
                        if n > 0 {
                            tracing::info!(key = %key, group = %group, consumer = %name, "deleted a consumer that left");
                            deleted += 1;
                        }
                    }
                }
            }
        }
        Ok(deleted)
    }
}

/// The records of an `XINFO` reply (a list of flat field/value lists), values as text.
pub(crate) fn records(reply: &Value) -> Vec<std::collections::HashMap<String, String>> {
    let Value::Array(items) = reply else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| match item {
            Value::Array(kv) => Some(
                kv.chunks_exact(2)
                    .filter_map(|c| {
                        let key = String::from_utf8_lossy(bytes(&c[0])?).into_owned();
                        let value = match &c[1] {
                            Value::Nil => return None,
                            v => match int(v) {
                                Some(n) if !matches!(v, Value::BulkString(_)) => n.to_string(),
                                _ => String::from_utf8_lossy(bytes(v)?).into_owned(),
                            },
                        };
                        Some((key, value))
                    })
                    .collect(),
            ),
            Value::Map(kv) => Some(
                kv.iter()
                    .filter_map(|(k, v)| {
                        let key = String::from_utf8_lossy(bytes(k)?).into_owned();
                        let value = match int(v) {
                            Some(n) => n.to_string(),
                            None => String::from_utf8_lossy(bytes(v)?).into_owned(),
                        };
                        Some((key, value))
                    })
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

fn field_values(reply: &Value, field: &str) -> Vec<String> {
    records(reply)
        .into_iter()
        .filter_map(|mut r| r.remove(field))
        .collect()
}

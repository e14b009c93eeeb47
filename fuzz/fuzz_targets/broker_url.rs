//! Broker URLs (`amqp`, `redis`, `SecretUrl`) and the redaction of their password.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cqrs_sync_fuzz::broker_url(data));

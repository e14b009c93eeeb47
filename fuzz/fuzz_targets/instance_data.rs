//! `instance_data` converted by column type as the SeaORM replica adapter does.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cqrs_sync_fuzz::instance_data(data));

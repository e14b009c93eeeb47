//! The value forms of WIRE.md section 2: datetimes, dates, times, decimals, UUIDs,
//! durations and integers.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cqrs_sync_fuzz::values(data));

//! The command line's `--filter` (django-cqrs JSON lookups) against a fixed table.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cqrs_sync_fuzz::filter(data));

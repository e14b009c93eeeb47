//! JSON bodies as a replica decodes them (django-cqrs's form).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cqrs_sync_fuzz::envelope(cqrs_actors::Codec::Json, data));

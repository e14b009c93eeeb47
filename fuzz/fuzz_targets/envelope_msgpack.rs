//! MessagePack bodies as a replica decodes them.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cqrs_sync_fuzz::envelope(cqrs_actors::Codec::MessagePack, data));

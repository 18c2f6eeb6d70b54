#![no_main]
//! See `livegate_proto::fuzzing::session` for what this target feeds and checks.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| livegate_proto::fuzzing::session(data));

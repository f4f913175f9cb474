//! Fuzzes `procwire_rpc::fuzz::frames` (see its docs); the committed corpus is fuzz/corpus/frames.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| procwire_rpc::fuzz::frames(data));

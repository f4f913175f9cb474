//! Fuzzes `procwire_rpc::fuzz::handshake` (see its docs); the committed corpus is fuzz/corpus/handshake.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| procwire_rpc::fuzz::handshake(data));

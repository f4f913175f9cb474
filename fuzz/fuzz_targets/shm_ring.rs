//! Fuzzes `procwire_rpc::fuzz::shm_ring` (see its docs); the committed corpus is fuzz/corpus/shm_ring.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| procwire_rpc::fuzz::shm_ring(data));

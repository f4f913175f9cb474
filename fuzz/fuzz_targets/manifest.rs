//! Fuzzes the manifest parser (`procwire_supervisor::fuzz::manifest`); the committed corpus
//! is fuzz/corpus/manifest.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| procwire_supervisor::fuzz::manifest(data));

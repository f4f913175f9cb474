//! Compile-fail tests: each file under `tests/ui/` misuses `#[procwire_macros::service]`, and
//! its `.stderr` pins the message and where the caret points (at the offending token, never
//! at the attribute). Regenerate with `TRYBUILD=overwrite cargo test -p procwire-macros --test ui`
//! and read every diff.

#[test]
fn compile_errors_point_at_the_offending_token() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}

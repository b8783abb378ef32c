//! One tagged PostgreSQL message: first byte the type, the rest its body.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| interlock::fuzzing::pg_message(data));

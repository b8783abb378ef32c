//! One startup-phase packet (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| interlock::fuzzing::pg_startup(data));

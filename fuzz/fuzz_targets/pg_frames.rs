//! A client's bytes: a startup packet, then tagged frames, each decoded as client and server message (and re-encoded).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| interlock::fuzzing::pg_frames(data));

//! SQL text through the statement classifier and the redactor.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| interlock::fuzzing::sql(data));

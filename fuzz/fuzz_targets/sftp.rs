//! An SFTP session script ([side][len][bytes] chunks) through the tracker.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| interlock::fuzzing::sftp(data));

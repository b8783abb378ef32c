//! Protocol `tcp`: a transparent byte relay to the original destination,
//! with session start/end events carrying the identity, byte counts and
//! duration.

mod relay;

pub use relay::relay;

//! Any bytes through the protobuf decoder and validation: accepted or rejected with a
//! reason, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use slatrack::codec::{Decoder, Format};
use slatrack::event::TimeBounds;

fuzz_target!(|data: &[u8]| {
    let bounds = TimeBounds {
        min: TimeBounds::MIN_PLAUSIBLE,
        max_future_skew: Some(600_000_000),
    };
    let mut d = Decoder::new(Format::Protobuf, bounds, 1 << 20);
    let _ = d.decode(data, 1_760_000_000_000_000);
});

//! Any bytes through the JSON decoder and validation: accepted or rejected with a reason,
//! never a panic; and the fast scanner reads every input it takes as serde_json does.
#![no_main]
use libfuzzer_sys::fuzz_target;
use slatrack::codec::{Decoder, Format};
use slatrack::event::TimeBounds;

fuzz_target!(|data: &[u8]| {
    let bounds = TimeBounds {
        min: TimeBounds::MIN_PLAUSIBLE,
        max_future_skew: Some(600_000_000),
    };
    let mut d = Decoder::new(Format::Json, bounds, 1 << 20);
    let _ = d.decode(data, 1_760_000_000_000_000);
    slatrack::codec::json::check_scanner(data);
});

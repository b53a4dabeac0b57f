//! A stream of records (each prefixed by one length byte) through decode, the engine and a
//! checkpoint round trip, with a tiny key cap so overflow paths run: never a panic, and a
//! restored shard reports the same watermark and open buckets.
#![no_main]
use libfuzzer_sys::fuzz_target;
use slatrack::codec::Format;
use slatrack::config::Config;
use slatrack::pipeline::Pipeline;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let mut config = Config::default();
    config.limits.max_keys = 4;
    let config = Arc::new(config);
    let mut p = Pipeline::new(config.clone(), Format::Protobuf, Pipeline::bounds(&config));
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let n = (len as usize).min(tail.len());
        p.process(&tail[..n], 1_760_000_000_000_000);
        rest = &tail[n..];
    }
    let state = slatrack::store::checkpoint::encode_inline(&p.shard, 42);
    let (restored, next) =
        slatrack::store::checkpoint::decode(config, &state).expect("own checkpoint restores");
    assert_eq!(next, 42);
    assert_eq!(restored.watermark(), p.shard.watermark());
    assert_eq!(restored.open_buckets(), p.shard.open_buckets());
    p.shard.flush();
    let _ = p.shard.take_closed();
});

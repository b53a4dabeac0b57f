//! `config/slatrack.toml` is the built-in defaults, all of them: parsed, it is the same
//! tree as `Config::default()`, and every section of the tree appears in it.

use slatrack::config::Config;

const FILE: &str = include_str!("../config/slatrack.toml");

#[test]
fn the_defaults_file_is_the_built_in_defaults() {
    let parsed = Config::from_toml(FILE).expect("config/slatrack.toml parses");
    assert_eq!(
        format!("{parsed:#?}"),
        format!("{:#?}", Config::default()),
        "config/slatrack.toml and Config::default() differ"
    );
}

#[test]
fn the_defaults_file_sets_every_key_that_has_a_default() {
    // Each (section, key) the default tree serializes, other than the optional ones
    // (no default: `store.password`, `alerts.runbook_url` empty, `[kafka]`) and the
    // array-of-table sections, must be written in the file, not left to the code.
    let file: toml::Table = toml::from_str(FILE).expect("toml");
    let expected: &[(&str, &[&str])] = &[
        (
            "engine",
            &[
                "bucket",
                "allowed_lateness",
                "correction_horizon",
                "windows",
            ],
        ),
        ("validation", &["max_future_skew"]),
        (
            "limits",
            &[
                "max_keys",
                "max_record_bytes",
                "correction_cache_keys",
                "max_uncommitted_buckets",
            ],
        ),
        ("store", &["path", "minute_retention"]),
        (
            "sla",
            &[
                "on_time_target",
                "latency_target",
                "yellow_margin",
                "failed_target",
                "retry_target",
                "max_retries_target",
                "dlq_target",
                "rate_yellow_factor",
                "p50_target",
                "p95_target",
                "p99_threshold",
            ],
        ),
        ("service", &["checkpoint_interval", "idle_timeout"]),
        (
            "metrics",
            &[
                "listen",
                "tenant_label",
                "publish_interval",
                "gauge_interval",
                "max_series_keys",
            ],
        ),
        ("alerts", &["drift_for", "min_events"]),
    ];
    for (section, keys) in expected {
        let table = file
            .get(*section)
            .and_then(|v| v.as_table())
            .unwrap_or_else(|| panic!("config/slatrack.toml has no [{section}]"));
        for k in *keys {
            assert!(
                table.contains_key(*k),
                "config/slatrack.toml lacks {section}.{k}"
            );
        }
        for k in table.keys() {
            assert!(
                keys.contains(&k.as_str()),
                "{section}.{k} is in the file but not in this test's list"
            );
        }
    }
}

//! The PostgreSQL store on a real server (Debian's PostgreSQL, started per test on
//! 127.0.0.1 by `support/postgres.rs`): `slatrack replay` and `slatrack scorecard` as a
//! user runs them give the SQLite store's reports, replays stay idempotent, folding keeps
//! the reports, the documented views add up, a role without write rights is told which
//! right on which table it lacks, and TLS verifies the server's certificate. The live path
//! (`slatrack run` with SIGKILLs, a rebalance and a server crash) is in tansu_live.rs.
//! Built with `--features integration` (scripts/test-all.sh).
#![cfg(feature = "integration")]

#[path = "support/certs.rs"]
mod certs;
#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/scorecard.rs"]
mod scorecard;
#[path = "support/wait.rs"]
mod wait;

use postgres::Postgres;
use scorecard::{cards, globex_lines as globex, replay};
use slatrack::store::{PartitionStore, PgStore};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

fn slatrack(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_slatrack"))
        .args(args)
        .output()
        .expect("slatrack runs")
}

/// The SQL of every dashboard panel that reads the PostgreSQL data source.
fn dashboard_sql() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/dashboards/slatrack.json"
    );
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("json");
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        if p["datasource"]["type"] != "grafana-postgresql-datasource" {
            continue;
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(t["rawSql"].as_str().expect("rawSql").to_string());
        }
    }
    assert!(!out.is_empty(), "the dashboard has a PostgreSQL panel");
    out
}

#[test]
fn replays_into_postgres_give_the_sqlite_scorecards_and_fold_exactly() {
    let pg = Postgres::start();
    pg.create_db("cards");
    let url = pg.url("cards");
    let dir = tempfile::tempdir().expect("dir");
    let half = globex(dir.path(), "half.jsonl", Some(20_000));
    let all = globex(dir.path(), "all.jsonl", None);

    let sqlite = dir.path().join("s.db");
    replay(&all, &sqlite.to_string_lossy());
    let want = cards(&sqlite);

    // Half the log, then the whole grown log: each attempt counted once.
    replay(&half, &url);
    let again = replay(&all, &url);
    assert!(again.contains("already"), "{again}");
    assert_eq!(cards(Path::new(&url)), want, "PostgreSQL = SQLite");
    // The same file again replaces its own rows.
    replay(&all, &url);
    assert_eq!(cards(Path::new(&url)), want, "replayed twice");

    // The views add up to the scorecard's events.
    let events: u64 = pg
        .psql(
            "cards",
            "SELECT SUM(events) FROM sla_daily WHERE tenant = 'globex'",
        )
        .trim()
        .parse()
        .expect("a number");
    let json: serde_json::Value =
        serde_json::from_str(&scorecard::scorecard(Path::new(&url), "json")).expect("json");
    assert_eq!(Some(events), json["overall"]["events"].as_u64(), "{json}");

    // The dashboard's PostgreSQL panels run on the store, with Grafana's macros as Grafana
    // expands them, and have a value per day and platform.
    for sql in dashboard_sql() {
        let sql = sql
            .replace(
                "$__timeFilter(day)",
                "day BETWEEN '2025-09-08T00:00:00Z' AND '2025-11-17T00:00:00Z'",
            )
            .replace("${tenant:regex}", "globex")
            .replace("${platform:regex}", ".*");
        let out = pg.psql("cards", &sql);
        let rows: Vec<&str> = out.lines().collect();
        assert!(rows.len() >= 70 * 4, "{} rows of {sql}", rows.len());
        for r in rows {
            let pct: f64 = r.rsplit('|').next().and_then(|v| v.parse().ok()).expect(r);
            assert!((0.0..=100.0).contains(&pct), "{r}");
        }
    }

    // Folding every row into hours changes no figure.
    let mut s = PgStore::open(pg.target("cards")).expect("open");
    let minutes = |pg: &Postgres| -> u64 {
        pg.psql(
            "cards",
            "SELECT COUNT(*) FROM buckets WHERE bucket_secs < 3600",
        )
        .trim()
        .parse()
        .expect("count")
    };
    assert!(minutes(&pg) > 20_000);
    let end = slatrack::time::parse_date("2025-12-01").expect("date");
    loop {
        if !s.fold_before(end, 7).expect("fold").more {
            break;
        }
    }
    assert_eq!(minutes(&pg), 0, "everything folded");
    assert_eq!(cards(Path::new(&url)), want, "folded");
    assert_eq!(s.fold_before(end, 7).expect("fold").rows, 0, "nothing left");
}

#[test]
fn a_role_without_write_rights_is_told_the_table_and_the_right() {
    let pg = Postgres::start();
    pg.create_db("shared");
    let dir = tempfile::tempdir().expect("dir");
    let input = globex(dir.path(), "part.jsonl", Some(5_000));
    replay(&input, &pg.url("shared"));
    pg.psql(
        "shared",
        "CREATE ROLE reader LOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader",
    );
    let reader = pg.url_as("reader", "shared");

    // Reading is all it may do, and it may.
    let card = scorecard::scorecard(Path::new(&reader), "json");
    assert!(card.contains("\"events\""), "{card}");

    let out = slatrack(&[
        "replay",
        "--store",
        &reader,
        "--input",
        &globex(dir.path(), "more.jsonl", Some(6_000)).to_string_lossy(),
    ]);
    assert!(!out.status.success(), "a read-only role cannot replay");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("permission denied for table"),
        "names the table: {err}"
    );
    assert!(err.contains("needs DELETE"), "names the right: {err}");
    assert!(err.contains("GRANT"), "says what to do: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn tls_verifies_the_server_certificate() {
    let certs = tempfile::tempdir().expect("dir");
    let ca = certs::ca(certs.path(), "pg-ca");
    certs::server_cert(certs.path(), "pg-ca");
    let other_ca = certs::ca(certs.path(), "other-ca");
    let pg = Postgres::start_with(|data| {
        for f in ["server.crt", "server.key"] {
            std::fs::copy(certs.path().join(f), data.join(f)).expect("copy");
        }
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .expect("conf");
        writeln!(
            conf,
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'"
        )
        .expect("conf");
        // TLS only: a plain connection is refused by the server.
        let mut hba = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(data.join("pg_hba.conf"))
            .expect("hba");
        writeln!(
            hba,
            "local all all trust\nhostssl all all 127.0.0.1/32 trust"
        )
        .expect("hba");
    });
    pg.create_db("tls");
    let dir = tempfile::tempdir().expect("dir");
    let input = globex(dir.path(), "part.jsonl", Some(5_000));
    let base = pg.url("tls");

    let good = format!("{base}?sslmode=verify-full&sslrootcert={}", ca.display());
    let summary = replay(&input, &good);
    assert!(summary.contains("counted"), "{summary}");
    let card = scorecard::scorecard(Path::new(&good), "json");
    assert!(card.contains("\"events\""), "{card}");

    let wrong = format!("{base}?sslmode=require&sslrootcert={}", other_ca.display());
    let out = slatrack(&[
        "replay",
        "--store",
        &wrong,
        "--input",
        &input.to_string_lossy(),
    ]);
    assert!(
        !out.status.success(),
        "a server its CA did not sign is refused"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certificate verify failed"), "{err}");
    assert!(err.contains("sslrootcert"), "says what to do: {err}");

    let plain = format!("{base}?sslmode=disable");
    let out = slatrack(&[
        "replay",
        "--store",
        &plain,
        "--input",
        &input.to_string_lossy(),
    ]);
    assert!(!out.status.success(), "the server wants TLS");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pg_hba.conf"), "the server's reason: {err}");
}

/// Two owners commit the same partition's first checkpoint at once, the second while the
/// first's transaction is still open: the second waits for the partition's lock, then sees
/// the first's checkpoint and is refused as superseded, so nothing is counted twice.
/// (Without the lock the second would pass the fence — it reads before the first commits —
/// and add its rejection count and bucket again.)
#[test]
fn concurrent_commits_of_one_partition_are_fenced() {
    use slatrack::engine::{ClosedBucket, KeyInfo, Stats};
    use slatrack::store::{apply_commit, PartitionCommit, RejectRow, StoreError, StoreTx};
    let pg = Postgres::start();
    pg.create_db("fence");
    let target = || pg.target("fence");
    let mut stats = Stats::default();
    stats.counters.attempts = 3;
    stats.counters.events = 3;
    let buckets = [ClosedBucket {
        key: std::sync::Arc::new(KeyInfo {
            tenant: "globex".into(),
            platform: "workday".into(),
            direction: slatrack::event::Direction::Outbound,
            target_latency_us: 500_000,
        }),
        start: 60_000_000,
        width_us: 60_000_000,
        stats,
    }];
    let rejects = [RejectRow {
        tenant: "globex",
        platform: "workday",
        bucket: 60_000_000,
        reason: slatrack::event::RejectReason::MalformedProtobuf,
        count: 1,
    }];
    let no_dedup = slatrack::store::checkpoint::DedupRows {
        replace: false,
        before: i64::MIN,
        buckets: Vec::new(),
    };
    let grain = slatrack::store::rows::RowGrain::from_config(&Default::default());
    let commit = || PartitionCommit {
        source: "kafka:deliveries/0",
        expected: None,
        next_offset: 10,
        state: &[],
        output: slatrack::store::CommitOutput {
            buckets: &buckets,
            corrections: &[],
            closed_keys: &[],
            grain: &grain,
        },
        keys_before: i64::MIN,
        unread: None,
        rejects: &rejects,
        dedup: &no_dedup,
        publish: false,
    };
    let mut first = PgStore::open(target()).expect("first owner");
    let tx = first.begin_tx().expect("transaction");
    apply_commit(&tx, &commit()).expect("the first owner's commit");
    let mut second = PgStore::open(target()).expect("second owner");
    let result = std::thread::scope(|scope| {
        let other = scope.spawn(move || second.commit(&commit()));
        // The first owner commits only once the second is blocked inside its transaction.
        wait::wait_until(
            "the second owner to wait on a lock",
            std::time::Duration::from_secs(30),
            || {
                pg.psql(
                    "fence",
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name = 'slatrack'",
                )
                .trim()
                    != "0"
            },
        );
        Box::new(tx).commit().expect("the first owner commits");
        other.join().expect("thread")
    });
    assert!(
        matches!(result, Err(StoreError::Superseded { .. })),
        "the second owner is refused: {result:?}"
    );
    let count = |sql: &str| pg.psql("fence", sql).trim().to_string();
    assert_eq!(count("SELECT SUM(count) FROM rejects"), "1", "counted once");
    assert_eq!(count("SELECT SUM(events) FROM buckets"), "3");
    assert_eq!(count("SELECT next_offset FROM checkpoints"), "10");
}

/// `slatrack accept-new-log` on a PostgreSQL store: the checkpoint moves to offset 0 of the
/// new log, with every row the old log counted kept.
#[test]
fn a_new_log_is_accepted_on_postgres() {
    use slatrack::pipeline::Pipeline;
    let pg = Postgres::start();
    pg.create_db("newlog");
    let url = pg.url("newlog");
    let mut store = PgStore::open(pg.target("newlog")).expect("store");
    let config = std::sync::Arc::new(slatrack::config::Config::default());
    let source = "kafka:deliveries/0";
    let (mut p, next) = Pipeline::resume(
        config.clone(),
        slatrack::codec::Format::Protobuf,
        Pipeline::bounds(&config),
        &mut store,
        source,
    )
    .expect("resume");
    assert_eq!(next, None);
    let start = slatrack::time::parse_date("2025-10-01").expect("date");
    let events = slatrack::synthetic::pilot(3, "globex", start, 2 * 3_600_000_000, 400);
    let now = slatrack::time::now_micros();
    for e in &events {
        p.process(&slatrack::codec::protobuf::encode(e), now);
    }
    p.shard.flush();
    p.commit(&mut store, source, events.len() as i64)
        .expect("commit");
    let sum = || {
        pg.psql("newlog", "SELECT SUM(events) FROM buckets")
            .trim()
            .to_string()
    };
    let counted = sum();
    assert_ne!(counted, "", "rows were written");

    let out = Command::new(env!("CARGO_BIN_EXE_slatrack"))
        .args(["accept-new-log", "--store", &url, "--topic", "deliveries"])
        .args(["--partition", "0"])
        .output()
        .expect("slatrack runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("stood at {}", events.len())),
        "{said}"
    );
    assert_eq!(
        pg.psql(
            "newlog",
            "SELECT next_offset FROM checkpoints WHERE source = 'kafka:deliveries/0'"
        )
        .trim(),
        "0"
    );
    assert_eq!(sum(), counted, "what the old log counted stays");
}

/// The password comes from `store.password` (`env:`/`file:`), never from a log or an
/// error: a role that authenticates with SCRAM connects with it, is refused without it
/// (the message names the setting), and a wrong one is refused without being shown.
#[test]
fn the_password_comes_from_the_config_and_is_never_shown() {
    let pg = Postgres::start();
    pg.create_db("auth");
    pg.psql(
        "auth",
        "CREATE ROLE app LOGIN PASSWORD 'Sekr1t-pw'; GRANT ALL ON SCHEMA public TO app",
    );
    pg.set_hba(
        "local all all trust\nhost all slatrack 127.0.0.1/32 trust\nhost all app 127.0.0.1/32 scram-sha-256\n",
    );
    let dir = tempfile::tempdir().expect("dir");
    let input = globex(dir.path(), "part.jsonl", Some(3_000));
    let config = dir.path().join("slatrack.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"{}\"\npassword = \"env:APP_PG_PASSWORD\"\n",
            pg.url_as("app", "auth")
        ),
    )
    .expect("config");
    let replay = |password: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_slatrack"));
        c.args(["replay", "--config"])
            .arg(&config)
            .arg("--input")
            .arg(&input)
            .env_remove("APP_PG_PASSWORD");
        if let Some(p) = password {
            c.env("APP_PG_PASSWORD", p);
        }
        c.output().expect("slatrack runs")
    };
    let ok = replay(Some("Sekr1t-pw"));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let unset = replay(None);
    assert!(!unset.status.success());
    let err = String::from_utf8_lossy(&unset.stderr);
    assert!(
        err.contains("store.password") && err.contains("not set"),
        "{err}"
    );
    let wrong = replay(Some("not-the-pw"));
    assert!(!wrong.status.success());
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(err.contains("store.password"), "says what to check: {err}");
    assert!(
        !err.contains("not-the-pw") && !err.contains("Sekr1t"),
        "{err}"
    );
    // accept-new-log reads the password from the same config: it connects, and says the
    // partition has no checkpoint (nothing to accept), not that authentication failed.
    let accept = Command::new(env!("CARGO_BIN_EXE_slatrack"))
        .args(["accept-new-log", "--config"])
        .arg(&config)
        .args(["--topic", "deliveries", "--partition", "0"])
        .env("APP_PG_PASSWORD", "Sekr1t-pw")
        .output()
        .expect("slatrack runs");
    let err = String::from_utf8_lossy(&accept.stderr);
    assert!(
        !accept.status.success() && err.contains("has no checkpoint"),
        "{err}"
    );
}

/// A database written at schema version 2 keeps one `closed_keys` row per bucket; opened
/// for writing it is upgraded, and those rows read back as their bucket's keys.
#[test]
fn per_bucket_key_rows_of_version_2_read_back_after_the_upgrade() {
    let pg = Postgres::start();
    pg.create_db("v2");
    let key: u128 = 7 << 64 | 9;
    let hex: String = slatrack::store::checkpoint::pack(&[key])
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    pg.psql(
        "v2",
        &format!(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             INSERT INTO meta VALUES ('schema_version', '2');
             CREATE TABLE closed_keys (source TEXT NOT NULL, bucket_start_us BIGINT NOT NULL,
                                       segment BIGINT, keys BYTEA NOT NULL);
             INSERT INTO closed_keys VALUES ('s', 60000000, NULL, decode('{hex}', 'hex'));"
        ),
    );
    let mut store = PgStore::open(pg.target("v2")).expect("upgrade");
    assert_eq!(store.closed_keys("s", 60_000_000).expect("read"), vec![key]);
    assert!(store
        .closed_keys("s", 120_000_000)
        .expect("read")
        .is_empty());
    assert_eq!(
        pg.psql("v2", "SELECT value FROM meta WHERE key = 'schema_version'")
            .trim(),
        slatrack::store::postgres::SCHEMA_VERSION.to_string()
    );
}

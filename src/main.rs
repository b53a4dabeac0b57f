//! The `slatrack` binary: parses arguments and calls one library entry point each.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use slatrack::codec::Format;
use slatrack::config::Config;
use slatrack::contract::{calendar, Contracts};
use slatrack::store::{Access, Location, SqliteStore};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "slatrack",
    version,
    about = "Event-time-correct SLA telemetry from delivery events"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum WireFormat {
    Json,
    Protobuf,
}

impl From<WireFormat> for Format {
    fn from(f: WireFormat) -> Self {
        match f {
            WireFormat::Json => Format::Json,
            WireFormat::Protobuf => Format::Protobuf,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum ReportFormat {
    Markdown,
    Json,
    /// One self-contained page with charts (no script, no external asset).
    Html,
}

#[derive(Subcommand)]
enum SloAction {
    /// Print the SLOs as OpenSLO v1 documents (a YAML stream): a Service, an SLO per
    /// platform, and the burn-rate alert policies of `slatrack rules`.
    Export {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "openslo")]
        format: SloFormat,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum SloFormat {
    Openslo,
}

#[derive(Subcommand)]
enum Command {
    /// Run event-log files through the engine into the scorecard store.
    Replay {
        #[arg(long)]
        config: Option<PathBuf>,
        /// JSON lines (.jsonl) or length-delimited protobuf (.pb) files, in order.
        #[arg(long, required = true, num_args = 1..)]
        input: Vec<PathBuf>,
        /// SQLite file or postgres://USER@HOST:PORT/DB (overrides store.path).
        #[arg(long)]
        store: Option<PathBuf>,
        /// Wire format of every input (default: from each file's extension).
        #[arg(long, value_enum)]
        format: Option<WireFormat>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Render a tenant's Delivery SLA scorecard for [from, to) from the store.
    Scorecard {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        tenant: String,
        /// First day, YYYY-MM-DD (UTC), inclusive.
        #[arg(long, requires = "to", conflicts_with = "period")]
        from: Option<String>,
        /// Last day, YYYY-MM-DD (UTC), exclusive.
        #[arg(long, requires = "from", conflicts_with = "period")]
        to: Option<String>,
        /// A calendar month (`2025-10`) or an ISO week (`2025-W41`), UTC, instead of
        /// --from/--to. A period that has not ended is marked partial.
        #[arg(long, required_unless_present = "from")]
        period: Option<String>,
        #[arg(long, value_enum, default_value = "markdown")]
        format: ReportFormat,
        /// SQLite file or postgres://USER@HOST:PORT/DB (overrides store.path).
        #[arg(long)]
        store: Option<PathBuf>,
    },
    /// The service: consume delivery events from Kafka, checkpoint into the store.
    Run {
        #[arg(long)]
        config: Option<PathBuf>,
        /// SQLite file or postgres://USER@HOST:PORT/DB (overrides store.path).
        #[arg(long)]
        store: Option<PathBuf>,
    },
    /// Accept a partition's new log (its topic was recreated, or the brokers are a new
    /// cluster): the next `slatrack run` reads the new log from offset 0, with what the old
    /// log counted kept, so records the new log repeats are duplicates. Run it while no
    /// slatrack writes the store. SQLite and PostgreSQL stores.
    AcceptNewLog {
        #[arg(long)]
        config: Option<PathBuf>,
        /// SQLite file or postgres://… (overrides store.path).
        #[arg(long)]
        store: Option<PathBuf>,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: i32,
    },
    /// Print the Prometheus rule file (recording rules, burn-rate and drift alerts)
    /// generated from the SLA config.
    Rules {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print a Prometheus Operator PrometheusRule instead of a rule file.
        #[arg(long)]
        k8s: bool,
    },
    /// SLO definitions generated from the SLA config.
    Slo {
        #[command(subcommand)]
        action: SloAction,
    },
    /// Synthetic Globex-shaped traffic: to a file (`--output`, the 10-week fixture) or live
    /// to a Kafka topic (`--brokers`, real time at `--rate`).
    Generate {
        /// Output file (.jsonl or .pb).
        #[arg(long, conflicts_with = "brokers", required_unless_present = "brokers")]
        output: Option<PathBuf>,
        /// Kafka bootstrap servers for live traffic.
        #[arg(long)]
        brokers: Option<String>,
        #[arg(long, default_value = "deliveries")]
        topic: String,
        /// Logical events per second (live).
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
        /// Stop after this long (live; `90s`, `5m`, `1h`; a bare number is seconds;
        /// default: until Ctrl-C).
        #[arg(long, value_parser = parse_cli_duration)]
        duration: Option<std::time::Duration>,
        /// File: `globex-pilot`. Live: steady, workday-drift, late-and-duplicates, malformed.
        #[arg(long)]
        scenario: Option<String>,
        #[arg(long, default_value = "globex")]
        tenant: String,
        #[arg(long, value_enum)]
        format: Option<WireFormat>,
    },
    /// The README's first command: the real service on librdkafka's in-process mock
    /// cluster with live generated traffic, printing the scorecard every 5 s. With
    /// `--offline`, replays the 10-week Globex pilot instead.
    Demo {
        #[arg(long, default_value = "slatrack-demo")]
        dir: PathBuf,
        /// Stop after this long (`30s`, `5m`, `1h`; a bare number is seconds; default:
        /// until Ctrl-C).
        #[arg(long, value_parser = parse_cli_duration)]
        duration: Option<std::time::Duration>,
        #[arg(long, default_value_t = 300.0)]
        rate: f64,
        /// Where to serve /metrics, /healthz and /readyz (default 127.0.0.1:9898, or a free
        /// port when that one is taken; "" for none).
        #[arg(long)]
        listen: Option<String>,
        #[arg(long)]
        offline: bool,
    },
}

/// A duration on the command line: the config's syntax (`90s`, `5m`, `1h`, `2d`), or a
/// bare number of seconds.
fn parse_cli_duration(s: &str) -> Result<std::time::Duration, String> {
    let us = match s.trim().parse::<u64>() {
        Ok(secs) => secs.checked_mul(1_000_000),
        Err(_) => slatrack::time::parse_duration(s).and_then(|us| u64::try_from(us).ok()),
    };
    match us {
        Some(us) if us > 0 => Ok(std::time::Duration::from_micros(us)),
        _ => Err(format!(
            "{s:?} is not a duration: write a number with a unit (30s, 5m, 1h, 2d) or whole seconds"
        )),
    }
}

/// Every command reads the same way: defaults, then `--config FILE` if given, then
/// `SLATRACK_*` environment overrides.
fn load_config(path: Option<&Path>) -> Result<Config> {
    let mut c = match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    c.apply_env(|k| std::env::var(k).ok())?;
    slatrack::contract::Contracts::from_config(&c)?;
    if !c.tenants.is_empty() || !c.exclusions.is_empty() {
        tracing::info!(
            tenants = c.tenants.len(),
            exclusions = c.exclusions.len(),
            "SLA contracts apply: local periods, exclusions and credits (docs/contracts.md)"
        );
    }
    Ok(c)
}

fn parse_day(flag: &str, s: &str) -> Result<chrono::NaiveDate> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .with_context(|| format!("--{flag} {s:?} is not a date: write YYYY-MM-DD"))
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLATRACK_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Err(e) = run(Cli::parse()) {
        // A reader that went away (`slatrack replay … | head -1`) is not an error.
        if e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        }) {
            std::process::exit(0);
        }
        eprintln!("error: {}", describe(&e));
        std::process::exit(1);
    }
}

/// The error and its causes, each said once: a cause whose text its parent already
/// includes is left out.
fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

/// Writes to stdout; a closed pipe comes back as an error (`main` exits quietly on it)
/// instead of the panic of `print!`.
fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Replay {
            config,
            input,
            store,
            format,
            json,
        } => {
            let cfg = load_config(config.as_deref())?;
            let location = Location::of_config(store.as_deref(), &cfg.store)?;
            let summary = replay(Arc::new(cfg), &location, input, format.map(Into::into))?;
            if json {
                emit(&format!("{}\n", serde_json::to_string_pretty(&summary)?))?;
            } else {
                emit(&summary.text(&location))?;
            }
            if summary.counted == 0 && summary.already_counted == 0 {
                bail!("no record of the input was counted ({} read, {} rejected): check that the file holds delivery events and that --format (or the file's extension) says how they are encoded", summary.records, summary.rejected.values().sum::<u64>());
            }
        }
        Command::Scorecard {
            config,
            tenant,
            from,
            to,
            period,
            format,
            store,
        } => {
            let cfg = Arc::new(load_config(config.as_deref())?);
            let contracts = Contracts::from_config(&cfg)?;
            // Periods and days are the tenant's local ones.
            let tz = contracts.tenant(&tenant).time_zone;
            let (from, to) = match (period, from, to) {
                (Some(p), _, _) => calendar::period(tz, &p).with_context(|| {
                    format!("--period {p:?} is not a period: write YYYY-MM (a month) or YYYY-Www (an ISO week, e.g. 2025-W41)")
                })?,
                (None, Some(f), Some(t)) => {
                    let (first, after) = (parse_day("from", &f)?, parse_day("to", &t)?);
                    if after <= first {
                        bail!("--to must be after --from (the range is half-open: [from, to))");
                    }
                    calendar::dates(tz, first, after.pred_opt().unwrap_or(after))
                }
                _ => bail!("give --period, or --from and --to"),
            };
            let location = Location::of_config(store.as_deref(), &cfg.store)?;
            let store = slatrack::store::open(&location, Access::ReadOnly)?;
            let sc = slatrack::scorecard::build(&*store, cfg, &contracts, &tenant, from, to)?;
            if sc.overall.counters.attempts == 0 && sc.rejected_total() == 0 {
                bail!(
                    "{}",
                    slatrack::scorecard::no_data_message(&*store, &tenant, from, to)?
                );
            }
            match format {
                ReportFormat::Markdown => emit(&slatrack::scorecard::markdown::render(&sc))?,
                ReportFormat::Html => emit(&slatrack::scorecard::html::render(&sc))?,
                ReportFormat::Json => emit(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&slatrack::scorecard::json::render(&sc))?
                ))?,
            }
        }
        Command::AcceptNewLog {
            config,
            store,
            topic,
            partition,
        } => {
            let cfg = load_config(config.as_deref())?;
            // `store.password` too: a PostgreSQL store's password comes from the config.
            let location = Location::of_config(store.as_deref(), &cfg.store)?;
            let accepted =
                slatrack::service::accept_new_log(Arc::new(cfg), &location, &topic, partition)?;
            println!(
                "{topic}/{partition}: the next `slatrack run` reads the new log from offset 0 (the old log's checkpoint stood at {}); what the old log counted stays, and records the new log repeats are duplicates",
                accepted.old_next_offset
            );
        }
        Command::Rules { config, k8s } => {
            let cfg = load_config(config.as_deref())?;
            let missing = slatrack::rules::missing_windows(&cfg);
            if !missing.is_empty() {
                bail!(
                    "the alert rules read the windows {} that engine.windows does not keep: add them to engine.windows (the default keeps 5m, 1h, 1d and 7d)",
                    missing.join(", ")
                );
            }
            if k8s {
                emit(&slatrack::rules::render_prometheus_rule(&cfg))?;
            } else {
                emit(&slatrack::rules::render(&cfg))?;
            }
        }
        Command::Slo {
            action: SloAction::Export { config, format },
        } => {
            let cfg = load_config(config.as_deref())?;
            match format {
                SloFormat::Openslo => emit(&slatrack::slo::render(&cfg)?)?,
            }
        }
        Command::Run { config, store } => {
            let mut cfg = load_config(config.as_deref())?;
            let location = Location::of_config(store.as_deref(), &cfg.store)?;
            if let Some(s) = store {
                cfg.store.path = s;
            }
            slatrack::service::run(
                Arc::new(cfg),
                location,
                shutdown_on_signal(),
                Default::default(),
            )?;
        }
        Command::Generate {
            output,
            brokers,
            topic,
            rate,
            duration,
            scenario,
            tenant,
            format,
        } => match (output, brokers) {
            (Some(output), _) => {
                let format = match format {
                    Some(f) => f.into(),
                    None => slatrack::source::file::format_of(&output)?,
                };
                let events = match scenario.as_deref().unwrap_or("globex-pilot") {
                    "globex-pilot" => slatrack::synthetic::globex_fixture(),
                    other => bail!("unknown file scenario {other:?}: available: globex-pilot"),
                };
                write_events(&output, format, &events)?;
                eprintln!("wrote {} records to {}", events.len(), output.display());
            }
            (None, Some(brokers)) => {
                use slatrack::synthetic::live::{produce, LiveGenerator, Scenario};
                let name = scenario.as_deref().unwrap_or("steady");
                let sc = Scenario::parse(name).with_context(|| {
                    format!(
                        "unknown live scenario {name:?}: available: {}",
                        Scenario::NAMES
                    )
                })?;
                let format = format.map(Into::into).unwrap_or(Format::Protobuf);
                let now = slatrack::time::now_micros();
                let g = LiveGenerator::new(now as u64, &tenant, sc, format, now);
                let mut client = slatrack::kafka::ClientConfig::new();
                client.set("bootstrap.servers", &brokers);
                let stop = shutdown_on_signal();
                let n = produce(&client, &topic, g, rate, duration, &stop)?;
                eprintln!("produced {n} records to {topic}");
            }
            (None, None) => bail!("pass --output FILE or --brokers HOST:PORT"),
        },
        Command::Demo {
            dir,
            duration,
            rate,
            listen,
            offline,
        } => {
            if offline {
                demo(&dir)?
            } else {
                let opts = slatrack::service::demo::DemoOptions {
                    duration,
                    rate,
                    listen,
                };
                slatrack::service::demo::demo(&dir, &opts, shutdown_on_signal())?
            }
        }
    }
    Ok(())
}

/// A flag set by SIGINT or SIGTERM: the service then stops fetching, checkpoints and exits 0.
fn shutdown_on_signal() -> Arc<std::sync::atomic::AtomicBool> {
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = flag.clone();
    let (installed, ready) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            tracing::warn!("no signal handling: cannot start the tokio runtime");
            return;
        };
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            // Both handlers exist before the caller goes on: a signal that arrives during
            // start-up is a graceful stop, not the default kill.
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                tracing::warn!("no signal handling: cannot install SIGTERM/SIGINT handlers");
                return;
            };
            let _ = installed.send(());
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        });
        tracing::info!("signal received: stopping");
        f.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let _ = ready.recv_timeout(std::time::Duration::from_secs(5));
    flag
}

fn write_events(
    path: &Path,
    format: Format,
    events: &[slatrack::event::DeliveryEvent],
) -> Result<()> {
    let f =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = std::io::BufWriter::new(f);
    for ev in events {
        match format {
            Format::Json => writeln!(w, "{}", slatrack::codec::json::encode(ev))?,
            Format::Protobuf => {
                let msg = slatrack::codec::protobuf::to_message(ev);
                w.write_all(&prost::Message::encode_length_delimited_to_vec(&msg))?;
            }
        }
    }
    w.flush()?;
    Ok(())
}

fn replay(
    cfg: Arc<Config>,
    location: &Location,
    inputs: Vec<PathBuf>,
    format: Option<Format>,
) -> Result<slatrack::replay::ReplaySummary> {
    // A replay that fails or counts nothing leaves no SQLite file it created behind.
    let created = match location {
        Location::Sqlite(p) if !p.exists() => Some(p),
        _ => None,
    };
    let result = slatrack::store::open(location, Access::Create)
        .map_err(Into::into)
        .and_then(|mut s| replay_into(cfg, &mut *s, inputs, format));
    let failed = match &result {
        Ok(s) => s.counted == 0 && s.already_counted == 0,
        Err(_) => true,
    };
    if let (Some(store_path), true) = (created, failed) {
        if let Err(e) = SqliteStore::remove(store_path) {
            tracing::warn!(store = %store_path.display(), error = %e, "cannot remove the store this failed replay created");
        }
    }
    result
}

fn replay_into(
    cfg: Arc<Config>,
    store: &mut dyn slatrack::store::ReplayStore,
    inputs: Vec<PathBuf>,
    format: Option<Format>,
) -> Result<slatrack::replay::ReplaySummary> {
    let tty = std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let opts = slatrack::replay::ReplayOptions {
        inputs,
        format,
        bounds: None,
    };
    let summary = slatrack::replay::run(cfg, store, &opts, |n| {
        if tty {
            let rate = n as f64 / started.elapsed().as_secs_f64().max(1e-9);
            eprint!("\r{n:>12} records  {rate:>10.0} records/s");
        }
    })?;
    if tty {
        eprintln!();
    }
    Ok(summary)
}

fn demo(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let input = dir.join("globex-pilot.jsonl");
    let events = slatrack::synthetic::globex_fixture();
    write_events(&input, Format::Json, &events)?;
    let store_path = dir.join("slatrack.db");
    let location = Location::Sqlite(store_path.clone());
    let cfg = Arc::new(Config::default());
    let summary = replay(cfg.clone(), &location, vec![input], None)?;
    emit(&summary.text(&location))?;
    let store = SqliteStore::open_read_only(&store_path)?;
    let (from, to) = calendar::dates(
        chrono_tz::UTC,
        parse_day("from", "2025-09-08")?,
        parse_day("last", "2025-11-16")?,
    );
    let sc = slatrack::scorecard::build(&store, cfg, &Contracts::default(), "globex", from, to)?;
    emit("\n")?;
    emit(&slatrack::scorecard::markdown::render(&sc))?;
    Ok(())
}

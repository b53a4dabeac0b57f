//! The `slatrack` binary: parses arguments and calls one library entry point each.

use anyhow::{bail, Context, Result};
use clap::Parser;
use cli::{Cli, Command, ReportFormat, SloAction, SloFormat};
use slatrack::codec::Format;
use slatrack::config::Config;
use slatrack::contract::{calendar, Contracts};
use slatrack::store::{Access, Location, SqliteStore};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod cli;

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

/// glibc malloc's defaults give memory back to the kernel as soon as 128 KiB sit free at the
/// top of a heap, and its mmap threshold moves with each freed block. librdkafka's fetch
/// buffers (up to 1 MiB a partition) and a backfill's per-commit vectors are freed and
/// allocated again many times a second, so each round trip cost page faults and zeroed
/// pages. Fixed thresholds keep up to 256 MiB of freed memory for reuse (peak RSS is
/// unchanged: what is kept was in use a moment before; docs/operations.md).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc() {
    /// The largest mmap threshold glibc accepts on 64-bit (half its heap size).
    const MMAP_THRESHOLD: libc::c_int = 32 << 20;
    const TRIM_THRESHOLD: libc::c_int = 256 << 20;
    // SAFETY: mallopt only changes malloc's parameters; called before any other thread.
    let ok = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    };
    if !ok {
        tracing::debug!("malloc kept its default thresholds (mallopt refused)");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLATRACK_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    tune_malloc();
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

/// `slatrack scorecard`: one report to stdout, or reports into `--out` (see the command's
/// doc for the exit statuses).
fn scorecard(
    config: Option<PathBuf>,
    tenant: Option<String>,
    all_tenants: bool,
    out: Option<PathBuf>,
    (period, from, to): (Option<String>, Option<String>, Option<String>),
    format: ReportFormat,
    store: Option<PathBuf>,
) -> Result<()> {
    use slatrack::report::{self, Job, Span};
    let cfg = Arc::new(load_config(config.as_deref())?);
    let contracts = Contracts::from_config(&cfg)?;
    let span = match (period, from, to) {
        (Some(p), _, _) => Span::Period(p),
        (None, Some(f), Some(t)) => Span::Dates(parse_day("from", &f)?, parse_day("to", &t)?),
        _ => bail!("give --period, or --from and --to"),
    };
    let location = Location::of_config(store.as_deref(), &cfg.store)?;
    let store = slatrack::store::open(&location, Access::ReadOnly)?;
    let Some(out) = out else {
        let tenant = tenant.context("give --tenant (or --all-tenants with --out)")?;
        // Periods and days are the tenant's local ones.
        let (from, to) = report::instants(contracts.tenant(&tenant).time_zone, &span)?;
        let sc = slatrack::scorecard::build(&*store, cfg.clone(), &contracts, &tenant, from, to)?;
        if sc.overall.counters.attempts == 0 && sc.rejected_total() == 0 {
            bail!(
                "{}",
                slatrack::scorecard::no_data_message(&*store, &tenant, from, to)?
            );
        }
        if matches!(format, ReportFormat::Pdf) && std::io::stdout().is_terminal() {
            bail!("a PDF is not for the terminal: redirect it (> report.pdf) or give --out DIR");
        }
        let brand = slatrack::scorecard::branding::Branding::load(&cfg.report)?;
        let bytes = report::render(&sc, format.into(), &brand)?;
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(&bytes)?;
        stdout.flush()?;
        return Ok(());
    };
    let tenants = if all_tenants {
        Job::tenants_in_store(&*store)?
    } else {
        vec![tenant.context("give --tenant or --all-tenants")?]
    };
    if tenants.is_empty() {
        eprintln!(
            "Error: the store holds no tenant: run `slatrack replay` or `slatrack run` first"
        );
        std::process::exit(3);
    }
    let job = Job {
        store: &*store,
        config: cfg.clone(),
        contracts: &contracts,
        span,
        format: format.into(),
        out: out.clone(),
        now: slatrack::time::now_micros(),
    };
    let summaries = job.run(&tenants)?;
    let written = summaries.iter().filter(|s| s.path.is_some()).count();
    eprintln!(
        "{written} report(s) of {} tenant(s) and index.html written to {}",
        summaries.len(),
        out.display()
    );
    if written == 0 {
        eprintln!(
            "Error: no tenant has data in the period: nothing to report (index.html lists them)"
        );
        std::process::exit(3);
    }
    if let Some(url) = cfg.report.webhook()? {
        if let Err(e) = report::notify::post_all(&url, &summaries) {
            eprintln!("Error: {e}");
            std::process::exit(4);
        }
    }
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
            all_tenants,
            out,
            from,
            to,
            period,
            format,
            store,
        } => {
            return scorecard(
                config,
                tenant,
                all_tenants,
                out,
                (period, from, to),
                format,
                store,
            )
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
            format,
            listen,
            offline,
        } => {
            if offline {
                demo(&dir)?
            } else {
                let opts = slatrack::service::demo::DemoOptions {
                    duration,
                    rate,
                    format: format.into(),
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

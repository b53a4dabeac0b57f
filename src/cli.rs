//! The command line: every subcommand, its flags and their help (what `slatrack --help`
//! prints). `main.rs` runs them.

use clap::{Parser, Subcommand, ValueEnum};
use slatrack::codec::Format;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "slatrack",
    version,
    about = "Event-time-correct SLA telemetry from delivery events"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum WireFormat {
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
pub enum ReportFormat {
    Markdown,
    Json,
    /// One self-contained page with charts (no script, no external asset).
    Html,
    /// The HTML page printed by headless Chromium (must be installed).
    Pdf,
}

impl From<ReportFormat> for slatrack::report::Format {
    fn from(f: ReportFormat) -> Self {
        match f {
            ReportFormat::Markdown => Self::Markdown,
            ReportFormat::Json => Self::Json,
            ReportFormat::Html => Self::Html,
            ReportFormat::Pdf => Self::Pdf,
        }
    }
}

#[derive(Subcommand)]
pub enum SloAction {
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
pub enum SloFormat {
    Openslo,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// Render a tenant's Delivery SLA scorecard for [from, to) from the store; with
    /// --out, into a directory with an index (and --all-tenants, one per tenant).
    /// Exit status: 0 written, 1 an error, 3 no tenant had data, 4 reports written but
    /// the [report.notify] webhook refused them.
    Scorecard {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(
            long,
            required_unless_present = "all_tenants",
            conflicts_with = "all_tenants"
        )]
        tenant: Option<String>,
        /// Every tenant with data in the store (needs --out).
        #[arg(long, requires = "out")]
        all_tenants: bool,
        /// Write `<tenant>.<format>` files and `index.html` here instead of printing, then
        /// post each tenant's summary to [report.notify]'s webhook.
        #[arg(long)]
        out: Option<PathBuf>,
        /// First day, YYYY-MM-DD (the tenant's local day), inclusive.
        #[arg(long, requires = "to", conflicts_with = "period")]
        from: Option<String>,
        /// Last day, YYYY-MM-DD (local), exclusive.
        #[arg(long, requires = "from", conflicts_with = "period")]
        to: Option<String>,
        /// A calendar month (`2025-10`) or an ISO week (`2025-W41`) in the tenant's time
        /// zone, instead of --from/--to. A period that has not ended is marked partial.
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
        /// The records' wire format on the demo topic.
        #[arg(long, value_enum, default_value = "protobuf")]
        format: WireFormat,
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
pub fn parse_cli_duration(s: &str) -> Result<std::time::Duration, String> {
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

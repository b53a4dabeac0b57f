//! A real PostgreSQL server for the integration suite: Debian's binaries (`initdb`,
//! `pg_ctl`; `SLATRACK_PG_BIN` names their directory, else the newest
//! /usr/lib/postgresql/*/bin), a temporary data directory, 127.0.0.1 on a free port, no
//! system service. As root the server runs as the `postgres` user (initdb refuses root).
//! Stopped on drop.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    run_as: Option<String>,
}

/// The directory of Debian's PostgreSQL server binaries.
fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("SLATRACK_PG_BIN") {
        return PathBuf::from(d);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().expect(
        "PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb): \
         run the suite via scripts/test-all.sh, which installs Debian's postgresql, \
         or set SLATRACK_PG_BIN",
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn check(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Postgres {
    /// initdb (superuser `slatrack`, trust on 127.0.0.1) and start.
    pub fn start() -> Postgres {
        Self::start_with(|_| {})
    }

    /// As [`Postgres::start`], `configure` writing into the data directory first (TLS
    /// files, `postgresql.conf` lines).
    pub fn start_with(configure: impl FnOnce(&Path)) -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("temp dir");
        let run_as = is_root().then(|| "postgres".to_string());
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let pg = Postgres {
            dir,
            bin,
            port,
            run_as,
        };
        let data = pg.data();
        std::fs::create_dir(&data).expect("data dir");
        pg.chown(pg.dir.path());
        pg.chown(&data);
        check(
            "initdb",
            pg.command("initdb")
                .args(["-D", &data.to_string_lossy()])
                .args(["-U", "slatrack", "--auth=trust", "-E", "UTF8", "--no-sync"])
                .output()
                .expect("initdb runs"),
        );
        configure(&data);
        pg.chown_tree(&data);
        pg.start_again();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn chown(&self, p: &Path) {
        if let Some(user) = &self.run_as {
            check(
                "chown",
                Command::new("chown")
                    .arg(user)
                    .arg(p)
                    .output()
                    .expect("chown"),
            );
        }
    }

    fn chown_tree(&self, p: &Path) {
        if let Some(user) = &self.run_as {
            check(
                "chown -R",
                Command::new("chown")
                    .args(["-R", user])
                    .arg(p)
                    .output()
                    .expect("chown"),
            );
        }
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        }
    }

    /// Starts the server (again) and waits until it accepts connections (`pg_ctl -w`).
    pub fn start_again(&self) {
        let data = self.data();
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        check(
            "pg_ctl start",
            self.command("pg_ctl")
                .args(["-D", &data.to_string_lossy(), "-o", &opts, "-w", "-t", "60"])
                .args(["-l", &self.dir.path().join("server.log").to_string_lossy()])
                .arg("start")
                .output()
                .expect("pg_ctl runs"),
        );
    }

    /// Replaces `pg_hba.conf` with `lines` and has the server reload it.
    pub fn set_hba(&self, lines: &str) {
        let path = self.data().join("pg_hba.conf");
        std::fs::write(&path, lines).expect("pg_hba.conf");
        self.chown(&path);
        check(
            "pg_ctl reload",
            self.command("pg_ctl")
                .args(["-D", &self.data().to_string_lossy()])
                .arg("reload")
                .output()
                .expect("pg_ctl runs"),
        );
    }

    /// `pg_ctl stop -m immediate`: every backend killed, no checkpoint (a crash).
    pub fn stop_immediate(&self) {
        check(
            "pg_ctl stop",
            self.command("pg_ctl")
                .args([
                    "-D",
                    &self.data().to_string_lossy(),
                    "-m",
                    "immediate",
                    "-w",
                ])
                .arg("stop")
                .output()
                .expect("pg_ctl runs"),
        );
    }

    /// The superuser's URL of database `db` (created by [`Postgres::create_db`]).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://slatrack@127.0.0.1:{}/{db}", self.port)
    }

    /// [`Postgres::url`] as slatrack's connection target.
    pub fn target(&self, db: &str) -> slatrack::store::PgTarget {
        slatrack::store::PgTarget::parse(&self.url(db)).expect("a PostgreSQL URL")
    }

    pub fn url_as(&self, user: &str, db: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{db}", self.port)
    }

    pub fn create_db(&self, db: &str) {
        self.psql("postgres", &format!("CREATE DATABASE {db}"));
    }

    /// Runs SQL with psql as the superuser; returns its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let psql = self.bin.join("psql");
        let psql = if psql.exists() {
            psql
        } else {
            PathBuf::from("psql")
        };
        check(
            "psql",
            Command::new(psql)
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", "slatrack", "-d", db, "-v", "ON_ERROR_STOP=1", "-At"])
                .args(["-c", sql])
                .output()
                .expect("psql runs"),
        )
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", &self.data().to_string_lossy(), "-m", "immediate"])
            .arg("stop")
            .output();
    }
}

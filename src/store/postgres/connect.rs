//! Reaching a PostgreSQL store: the URL (libpq's form), the password from `store.password`
//! (`env:`/`file:`), TLS with certificate verification, and what a failure means for the
//! operator.

use crate::store::StoreError;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;
use std::str::FromStr;

/// Where a PostgreSQL store is and how to reach it. `sslmode` and `sslrootcert` are read
/// as libpq reads them, with one difference: whenever TLS is used the server's certificate
/// is verified (against `sslrootcert`, else the system's roots) and its name checked, so
/// `require`, `verify-ca` and `verify-full` all mean verified TLS; `prefer` (the default)
/// uses verified TLS when the server offers it; `disable` never uses TLS.
#[derive(Clone)]
pub struct PgTarget {
    config: postgres::Config,
    tls: TlsMode,
    ca_file: Option<String>,
    shown: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsMode {
    Disable,
    Prefer,
    Require,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl PartialEq for PgTarget {
    fn eq(&self, other: &Self) -> bool {
        self.shown == other.shown
    }
}

impl Eq for PgTarget {}

impl std::fmt::Display for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// The URL as shown in logs and errors: any password in it replaced by `***`.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

impl PgTarget {
    /// True if `s` names a PostgreSQL store.
    pub fn is_url(s: &str) -> bool {
        s.starts_with("postgres://") || s.starts_with("postgresql://")
    }

    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let shown = redacted(url);
        let bad = |why: String| StoreError::BadLocation(format!("{shown}: {why}"));
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut tls = TlsMode::Prefer;
        let mut ca_file = None;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "sslmode" => {
                    tls = match v {
                        "disable" => TlsMode::Disable,
                        "allow" | "prefer" => TlsMode::Prefer,
                        "require" | "verify-ca" | "verify-full" => TlsMode::Require,
                        _ => return Err(bad(format!("sslmode={v} is not one of disable, prefer, require, verify-ca, verify-full"))),
                    }
                }
                "sslrootcert" => ca_file = Some(v.to_string()),
                _ => rest.push(pair),
            }
        }
        let mut passed = base.to_string();
        if !rest.is_empty() {
            passed = format!("{base}?{}", rest.join("&"));
        }
        let mut config = postgres::Config::from_str(&passed).map_err(|e| bad(e.to_string()))?;
        config.ssl_mode(match tls {
            TlsMode::Disable => postgres::config::SslMode::Disable,
            TlsMode::Prefer => postgres::config::SslMode::Prefer,
            TlsMode::Require => postgres::config::SslMode::Require,
        });
        if config.get_user().is_none() {
            return Err(bad("no user: write postgres://USER@HOST:PORT/DB".into()));
        }
        config.application_name("slatrack");
        config.connect_timeout(std::time::Duration::from_secs(10));
        Ok(Self {
            config,
            tls,
            ca_file,
            shown,
        })
    }

    /// Sets the password (from `store.password`), replacing one in the URL.
    pub fn set_password(&mut self, password: &str) {
        self.config.password(password);
    }

    /// Opens a connection. Nothing of the password reaches a log or an error.
    pub fn connect(&self) -> Result<postgres::Client, StoreError> {
        let client = if self.tls == TlsMode::Disable {
            self.config.connect(postgres::NoTls)
        } else {
            self.config.connect(self.tls_connector()?)
        };
        client.map_err(|e| self.error("connect", &e))
    }

    fn tls_connector(&self) -> Result<MakeTlsConnector, StoreError> {
        let tls_err = |why: String| {
            StoreError::postgres(
                &self.shown,
                "TLS setup",
                why,
                "check sslrootcert in the store URL: a PEM file of the CA that signed the server's certificate",
            )
        };
        let mut b = SslConnector::builder(SslMethod::tls()).map_err(|e| tls_err(e.to_string()))?;
        b.set_verify(SslVerifyMode::PEER);
        match &self.ca_file {
            Some(ca) => b
                .set_ca_file(ca)
                .map_err(|e| tls_err(format!("cannot read CA file {ca}: {e}")))?,
            None => b
                .set_default_verify_paths()
                .map_err(|e| tls_err(e.to_string()))?,
        }
        Ok(MakeTlsConnector::new(b.build()))
    }

    /// A store error for a failed operation (`op` names the statement and its table).
    pub fn error(&self, op: &str, e: &postgres::Error) -> StoreError {
        let (why, hint) = match e.as_db_error() {
            Some(db) => {
                let mut why = db.message().to_string();
                if let Some(d) = db.detail() {
                    why = format!("{why}: {d}");
                }
                (why, hint_for(db.code(), op))
            }
            None => {
                let mut why = e.to_string();
                let mut src = std::error::Error::source(e);
                while let Some(s) = src {
                    why = format!("{why}: {s}");
                    src = s.source();
                }
                let hint = if why.contains("certificate") {
                    "the server's TLS certificate was not accepted: give its CA as sslrootcert=PATH in the store URL (or sslmode=disable on a trusted network)"
                } else {
                    "PostgreSQL is unreachable: check the host and port in the store URL; checkpoints wait and fetching pauses until it answers"
                };
                (why, hint)
            }
        };
        StoreError::postgres(&self.shown, op, why, hint)
    }
}

/// The operator's next step for a PostgreSQL error, by its SQLSTATE.
fn hint_for(code: &postgres::error::SqlState, op: &str) -> &'static str {
    use postgres::error::SqlState as S;
    if *code == S::INSUFFICIENT_PRIVILEGE {
        if op.starts_with("SELECT") {
            "the store's role needs SELECT on that table: GRANT it (docs/stores.md, \"PostgreSQL\")"
        } else if op.starts_with("CREATE") {
            "the store's role may not create slatrack's tables: create them once as their owner (run slatrack with that role), or GRANT CREATE on the schema"
        } else {
            "the store's role needs SELECT, INSERT, UPDATE and DELETE on slatrack's tables: GRANT them (docs/stores.md, \"PostgreSQL\"); checkpoints resume once granted"
        }
    } else if *code == S::INVALID_PASSWORD || *code == S::INVALID_AUTHORIZATION_SPECIFICATION {
        "check the user in the store URL and store.password"
    } else if *code == S::INVALID_CATALOG_NAME {
        "the database in the store URL does not exist: create it (createdb) or fix the URL"
    } else if *code == S::DISK_FULL {
        "the database server's disk is full: free space; checkpoints resume by themselves"
    } else if code.code().starts_with("08") || code.code().starts_with("57") {
        "PostgreSQL went away or is shutting down: checkpoints wait and fetching pauses until it answers"
    } else {
        "checkpoints are retried; fetching pauses until the store accepts writes"
    }
}

/// What a statement does, for errors: its verb and table, e.g. `INSERT INTO buckets`.
pub fn op_of(sql: &str) -> String {
    let words: Vec<&str> = sql.split_whitespace().collect();
    let verb = words.first().copied().unwrap_or("");
    let table_after = |kw: &str| {
        words
            .iter()
            .position(|w| w.eq_ignore_ascii_case(kw))
            .and_then(|i| words.get(i + 1))
            .map(|t| t.trim_matches(|c: char| !c.is_alphanumeric() && c != '_'))
    };
    let table = match verb.to_ascii_uppercase().as_str() {
        "INSERT" => table_after("INTO"),
        "UPDATE" => words.get(1).copied(),
        _ => table_after("FROM"),
    };
    let upsert = sql.contains("DO UPDATE");
    match table {
        Some(t) if upsert => {
            format!("{verb} … ON CONFLICT DO UPDATE on table {t} (needs INSERT and UPDATE)")
        }
        Some(t) => format!("{verb} on table {t} (needs {verb})"),
        None => verb.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let t =
            PgTarget::parse("postgres://app:s3cret@db:5432/slatrack?sslmode=require").expect("url");
        assert_eq!(
            t.to_string(),
            "postgres://app:***@db:5432/slatrack?sslmode=require"
        );
        assert!(!format!("{t:?}").contains("s3cret"));
        assert_eq!(redacted("postgres://app@db/x"), "postgres://app@db/x");
    }

    #[test]
    fn urls() {
        let t = PgTarget::parse("postgresql://app@127.0.0.1:5433/s?sslmode=verify-full&sslrootcert=/ca.pem&connect_timeout=3")
            .expect("url");
        assert_eq!(t.tls, TlsMode::Require);
        assert_eq!(t.ca_file.as_deref(), Some("/ca.pem"));
        assert!(PgTarget::parse("postgres://db/x").is_err(), "no user");
        assert!(PgTarget::parse("postgres://a@db/x?sslmode=sometimes").is_err());
        assert!(PgTarget::parse("postgres://a@db/x?bogus=1").is_err());
    }

    #[test]
    fn ops_name_the_table_and_the_right() {
        assert_eq!(
            op_of("INSERT INTO unread (a) VALUES ($1) ON CONFLICT (a) DO NOTHING"),
            "INSERT on table unread (needs INSERT)"
        );
        assert!(
            op_of("INSERT INTO buckets (a) VALUES ($1) ON CONFLICT (a) DO UPDATE SET a = 1")
                .contains("needs INSERT and UPDATE")
        );
        assert_eq!(
            op_of("DELETE FROM closed_keys WHERE x"),
            "DELETE on table closed_keys (needs DELETE)"
        );
        assert_eq!(
            op_of("SELECT a, b FROM checkpoints WHERE source = $1"),
            "SELECT on table checkpoints (needs SELECT)"
        );
    }
}

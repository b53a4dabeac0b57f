//! A minimal HTTP/1.1 listener for `/metrics`, `/healthz` and `/readyz`: three GET paths
//! on one port, answered from memory, so a hand-written responder beats pulling an HTTP
//! framework into the binary. One thread; each request is read with a 2 s timeout and
//! answered with `Connection: close`.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

pub trait Endpoints: Send + Sync + 'static {
    fn metrics(&self) -> String;
    fn ready(&self) -> Result<(), String>;
}

/// Binds `addr` and serves until the process exits. Returns the bound address (port 0
/// picks a free port).
pub fn serve(addr: &str, endpoints: Arc<dyn Endpoints>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("slatrack-http".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(e) = answer(stream, &*endpoints) {
                    tracing::debug!(error = %e, "http request failed");
                }
            }
        })?;
    Ok(local)
}

fn answer(stream: TcpStream, e: &dyn Endpoints) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("");
    // Drain the headers (ignore them).
    let mut h = String::new();
    while reader.read_line(&mut h)? > 2 {
        h.clear();
    }
    let (status, ctype, body) = match path.split('?').next().unwrap_or("") {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", e.metrics()),
        "/healthz" => ("200 OK", "text/plain", "ok\n".to_string()),
        "/readyz" => match e.ready() {
            Ok(()) => ("200 OK", "text/plain", "ready\n".to_string()),
            Err(why) => (
                "503 Service Unavailable",
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        _ => (
            "404 Not Found",
            "text/plain",
            "paths: /metrics /healthz /readyz\n".to_string(),
        ),
    };
    let mut s = stream;
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    s.flush()
}

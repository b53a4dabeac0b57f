//! The metrics/health listener under hostile clients: hundreds of idle and byte-at-a-time
//! connections must not delay a probe, and must not cost a thread each.

use slatrack::sink::http::{serve, Endpoints};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// The tests count this process's threads and descriptors: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Fixed;

impl Endpoints for Fixed {
    fn metrics(&self) -> String {
        "slatrack_up 1\n".into()
    }
    fn metrics_protobuf(&self) -> Vec<u8> {
        b"protobuf".to_vec()
    }
    fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// One GET on a fresh connection; the whole answer must arrive within `deadline` (the
/// kubelet's probe timeout is 1 s).
fn get(addr: SocketAddr, path: &str, deadline: Duration) -> String {
    let mut s = TcpStream::connect_timeout(&addr, deadline).expect("connect");
    s.set_read_timeout(Some(deadline)).expect("timeout");
    s.set_write_timeout(Some(deadline)).expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out)
        .unwrap_or_else(|e| panic!("GET {path} did not answer within {deadline:?}: {e}"));
    out
}

#[test]
fn probes_answer_while_hundreds_of_connections_stall() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let addr = serve("127.0.0.1:0", Arc::new(Fixed)).expect("listen");
    let deadline = Duration::from_secs(1);
    assert!(get(addr, "/readyz", deadline).starts_with("HTTP/1.1 200"));
    let threads_before = count("/proc/self/task");
    let fds_before = count("/proc/self/fd");

    // 100 connections that never send a byte, 100 that send a request one byte at a time.
    let idle: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(addr).expect("idle connection"))
        .collect();
    let mut slow: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(addr).expect("slow connection"))
        .collect();
    let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n";
    for byte in request.iter().take(12) {
        for s in &mut slow {
            s.write_all(&[*byte]).expect("one byte");
        }
        let ready = get(addr, "/readyz", deadline);
        assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
        assert!(ready.ends_with("ready\n"), "{ready}");
        let metrics = get(addr, "/metrics", deadline);
        assert!(metrics.contains("slatrack_up 1"), "{metrics}");
    }
    assert!(get(addr, "/nope", deadline).starts_with("HTTP/1.1 404"));

    // One thread serves them all; each connection costs this process two descriptors
    // (the client's end here and the server's), nothing more.
    let threads = count("/proc/self/task");
    assert!(
        threads <= threads_before + 1,
        "{threads} threads with 200 connections open, {threads_before} before"
    );
    let fds = count("/proc/self/fd");
    assert!(
        fds <= fds_before + 2 * 200 + 16,
        "{fds} descriptors with 200 connections open, {fds_before} before"
    );
    drop(idle);
    drop(slow);
}

/// A request head larger than the listener reads is refused, not buffered.
#[test]
fn an_oversized_request_head_is_refused() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let addr = serve("127.0.0.1:0", Arc::new(Fixed)).expect("listen");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let huge = "a".repeat(64 * 1024);
    let _ = write!(s, "GET /metrics HTTP/1.1\r\nX-Big: {huge}\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(
        out.is_empty() || out.starts_with("HTTP/1.1 431") || out.starts_with("HTTP/1.1 400"),
        "an oversized head was served: {out}"
    );
    assert!(!out.contains("slatrack_up"), "{out}");
}

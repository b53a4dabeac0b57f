//! A minimal HTTP/1.1 GET (`Connection: close`) against slatrack's metrics listener: the
//! whole response (status line, headers, body), or "" when nothing answers (callers poll
//! or assert on it).
#![allow(dead_code)]

pub fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: slatrack\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Whether `/readyz` answers 200 (partitions assigned and restored, store writable).
pub fn is_ready(addr: std::net::SocketAddr) -> bool {
    http_get(addr, "/readyz").starts_with("HTTP/1.1 200")
}

//! Throwaway TLS material for the integration suite, made with Debian's `openssl`: a CA
//! and a server certificate for 127.0.0.1 signed by it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs (Debian's openssl package)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA named `name` in `dir`: `name.pem` (certificate) and `name.key`.
pub fn ca(dir: &Path, name: &str) -> PathBuf {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
    dir.join(format!("{name}.pem"))
}

/// A server certificate for 127.0.0.1 signed by CA `ca`: `server.crt` and `server.key`,
/// and `server.pem` holding both, as socat reads them.
pub fn server_cert(dir: &Path, ca: &str) -> PathBuf {
    std::fs::write(dir.join("san.ext"), "subjectAltName = IP:127.0.0.1\n").expect("ext");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ],
    );
    let pem = [
        std::fs::read(dir.join("server.crt")).expect("crt"),
        std::fs::read(dir.join("server.key")).expect("key"),
    ]
    .concat();
    std::fs::write(dir.join("server.pem"), pem).expect("pem");
    dir.join("server.pem")
}

//! `--format pdf`: the HTML page printed by headless Chromium (its print CSS lays the page
//! out for A4), which slatrack runs when it is installed.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum PdfError {
    #[error("--format pdf prints the HTML page with headless Chromium, and none was found (looked for $SLATRACK_CHROMIUM, then chromium, chromium-browser, google-chrome on PATH): install it (Debian: apt-get install chromium) or set SLATRACK_CHROMIUM to its path; --format html gives the same page")]
    NoChromium,
    #[error("Chromium ({chromium}) could not print the page: {why}")]
    Print { chromium: String, why: String },
    #[error("cannot use the temporary directory {dir}: {source}")]
    Temp { dir: String, source: std::io::Error },
}

/// Chromium: `$SLATRACK_CHROMIUM`, else the first of the usual names on `PATH`.
pub fn chromium() -> Result<PathBuf, PdfError> {
    if let Some(p) = std::env::var_os("SLATRACK_CHROMIUM") {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(PdfError::NoChromium)
}

/// The page as PDF bytes.
pub fn print(html: &str) -> Result<Vec<u8>, PdfError> {
    let chromium = chromium()?;
    let dir = std::env::temp_dir().join(format!(
        "slatrack-pdf-{}-{}",
        std::process::id(),
        crate::time::now_micros()
    ));
    let temp = |source| PdfError::Temp {
        dir: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(temp)?;
    let result = print_in(&chromium, &dir, html);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn print_in(chromium: &Path, dir: &Path, html: &str) -> Result<Vec<u8>, PdfError> {
    let fail = |why: String| PdfError::Print {
        chromium: chromium.display().to_string(),
        why,
    };
    let page = dir.join("page.html");
    let pdf = dir.join("page.pdf");
    std::fs::write(&page, html).map_err(|e| fail(e.to_string()))?;
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-pdf-header-footer",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("--print-to-pdf={}", pdf.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .map_err(|e| fail(format!("it did not start: {e}")))?;
    let bytes = std::fs::read(&pdf).unwrap_or_default();
    if !out.status.success() || !bytes.starts_with(b"%PDF") {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last: Vec<&str> = stderr.lines().rev().take(3).collect();
        return Err(fail(format!(
            "it exited with {} and wrote no PDF ({})",
            out.status,
            last.into_iter().rev().collect::<Vec<_>>().join(" / ")
        )));
    }
    Ok(bytes)
}

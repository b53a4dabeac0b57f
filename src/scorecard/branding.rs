//! A customer's look for the HTML page (`[report]`): title, logo, accent colour, footer.
//! Loaded once per run; the logo is embedded as a data URI so the page stays one file.

use crate::config::{ReportConfig, LOGO_TYPES};
use base64::Engine as _;

/// What a page is branded with; the default is slatrack's own look.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Branding {
    pub title: Option<String>,
    /// `data:image/…;base64,…`
    pub logo: Option<String>,
    /// `#rrggbb` (checked by the config).
    pub accent: Option<String>,
    pub footer: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read report.logo {path}: {source}; point report.logo at a readable .png, .jpg or .svg file")]
pub struct LogoError {
    path: String,
    source: std::io::Error,
}

impl Branding {
    pub fn load(c: &ReportConfig) -> Result<Self, LogoError> {
        let logo = match &c.logo {
            None => None,
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|source| LogoError {
                    path: path.display().to_string(),
                    source,
                })?;
                let ext = path
                    .extension()
                    .and_then(|e| e.to_str())
                    .unwrap_or("")
                    .to_ascii_lowercase();
                let mime = LOGO_TYPES
                    .iter()
                    .find(|(e, _)| *e == ext)
                    .map_or("application/octet-stream", |(_, m)| m);
                Some(format!(
                    "data:{mime};base64,{}",
                    base64::engine::general_purpose::STANDARD.encode(bytes)
                ))
            }
        };
        Ok(Self {
            title: c.title.clone(),
            logo,
            accent: c.accent.clone(),
            footer: c.footer.clone(),
        })
    }
}

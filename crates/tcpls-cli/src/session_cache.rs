//! The CLI's session tickets on disk, so that one `tcpls get` resumes the
//! session of an earlier one.
//!
//! The file is JSON (`{"version":1,"tickets":[{"server":..,"session":hex}],
//! "no_fast_open":[[ip,unix_seconds]]}`: tickets, and the addresses that
//! dropped a SYN with data) and holds resumption secrets: it is written with mode 0600, through a
//! temporary file renamed over it. Concurrent clients may overwrite each
//! other's tickets; the loser only does a full handshake next time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tcpls::SessionCache;

/// Servers whose tickets the file keeps.
const SERVERS: usize = 256;

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    tickets: Vec<Ticket>,
    /// Addresses that dropped a SYN with data, and when (Unix seconds):
    /// reached without TCP Fast Open for an hour after.
    #[serde(default)]
    no_fast_open: Vec<(std::net::IpAddr, u64)>,
}

#[derive(Serialize, Deserialize)]
struct Ticket {
    server: String,
    /// The DER-encoded OpenSSL session, in hex.
    session: String,
    /// The server spoke TCPLS (early data may be sent with this ticket).
    #[serde(default)]
    tcpls: bool,
}

/// `$XDG_CACHE_HOME/tcpls/sessions.json`, else `~/.cache/tcpls/sessions.json`.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("tcpls").join("sessions.json"))
}

/// A cache filled from `path`. A missing file is an empty cache; an
/// unreadable or malformed one is reported and ignored (the file is
/// rewritten on save).
pub fn load(path: &Path) -> Arc<SessionCache> {
    let cache = Arc::new(SessionCache::new(SERVERS));
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return cache,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "session cache not read");
            return cache;
        }
    };
    let file: File = match serde_json::from_slice(&text) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "session cache ignored");
            return cache;
        }
    };
    let kept = cache.import(file.tickets.into_iter().filter_map(|t| {
        Some(tcpls::ExportedTicket {
            key: t.server,
            der: hex::decode(t.session).ok()?,
            tcpls: t.tcpls,
        })
    }));
    for (ip, secs) in file.no_fast_open {
        tcpls::block_fast_open(ip, UNIX_EPOCH + Duration::from_secs(secs));
    }
    tracing::debug!(path = %path.display(), kept, "session cache loaded");
    cache
}

/// Writes the cache's unexpired tickets to `path` (mode 0600, the
/// directory created 0700 if missing).
pub fn save(cache: &SessionCache, path: &Path) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = File {
        version: 1,
        tickets: cache
            .export()
            .into_iter()
            .map(|t| Ticket {
                server: t.key,
                session: hex::encode(t.der),
                tcpls: t.tcpls,
            })
            .collect(),
        no_fast_open: tcpls::fast_open_blocked_destinations()
            .into_iter()
            .filter_map(|(ip, t)| Some((ip, t.duration_since(UNIX_EPOCH).ok()?.as_secs())))
            .collect(),
    };
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec(&file)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::Error::new(e).context(format!("writing {}", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_missing_or_broken_file_is_an_empty_cache_and_saving_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("sessions.json");
        assert!(load(&path).is_empty());
        let cache = load(&path);
        save(&cache, &path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, b"{not json").unwrap();
        assert!(load(&path).is_empty());
    }
}

//! What the server accepts: TLS (from `--web-config`) and credentials (its
//! `basic_auth_users`, `--auth-token-file`). Loaded at start, where a bad
//! file stops the agent (exit 2), and again on SIGHUP, where a bad file is
//! logged and counted and the access in force stays: a certificate rotation
//! gone wrong never drops the watch.

use std::{
    path::PathBuf,
    sync::{Arc, RwLock},
};

use tokio_rustls::TlsAcceptor;

use crate::{
    http::{auth::Credentials, tls, web_config},
    sync::ReadWrite,
};

/// The files access comes from.
#[derive(Clone, Debug, Default)]
pub struct AccessFiles {
    pub web_config: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
}

/// One loaded configuration, swapped whole.
pub struct Access {
    /// `None`: plain HTTP.
    pub tls: Option<TlsAcceptor>,
    pub credentials: Arc<Credentials>,
}

impl AccessFiles {
    /// Reads the files. Messages name the file and the key, never a secret.
    pub fn load(&self) -> Result<Access, String> {
        let config = match &self.web_config {
            Some(path) => web_config::read(path)?,
            None => web_config::WebConfig::default(),
        };
        let tls = match (&config.tls, &self.web_config) {
            (Some(settings), Some(path)) => Some(TlsAcceptor::from(
                tls::server_config(settings).map_err(|e| format!("web config {}: {e}", path.display()))?,
            )),
            _ => None,
        };
        let token = match &self.token_file {
            Some(path) => Some(read_token(path)?),
            None => None,
        };
        Ok(Access { tls, credentials: Arc::new(Credentials::new(config.users, token.as_deref())) })
    }
}

fn read_token(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("--auth-token-file {}: {e}", path.display()))?;
    // A trailing newline is the editor's, not the token's.
    let token = bytes.trim_ascii();
    if token.is_empty() {
        return Err(format!("--auth-token-file {}: the file is empty", path.display()));
    }
    if token.iter().any(|b| !b.is_ascii_graphic()) {
        return Err(format!(
            "--auth-token-file {}: a token is one line of visible ASCII characters (no spaces)",
            path.display()
        ));
    }
    Ok(token.to_vec())
}

/// The access in force. Connections take the TLS configuration when they
/// are accepted, requests the credentials when they arrive.
#[derive(Clone)]
pub struct LiveAccess(Arc<RwLock<Arc<Access>>>);

impl LiveAccess {
    pub fn new(access: Access) -> LiveAccess {
        LiveAccess(Arc::new(RwLock::new(Arc::new(access))))
    }

    pub fn current(&self) -> Arc<Access> {
        self.0.read_locked().clone()
    }

    /// Re-reads `files`; on success the new access replaces the old one.
    /// Whether TLS is on cannot change without a restart: turning it off would
    /// serve plain HTTP where clients expect TLS, turning it on would cut
    /// every client that speaks plain HTTP.
    pub fn reload(&self, files: &AccessFiles) -> Result<(), String> {
        let new = files.load()?;
        let tls_now = self.current().tls.is_some();
        if new.tls.is_some() != tls_now {
            return Err(format!(
                "TLS is {} now and the new file would turn it {}: restart the agent for that",
                if tls_now { "on" } else { "off" },
                if tls_now { "off" } else { "on" }
            ));
        }
        *self.0.write_locked() = Arc::new(new);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pywats-agent-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_missing_certificate_names_the_file_and_the_key() {
        let path =
            temp("missing-cert.yml", "tls_server_config:\n  cert_file: nope/server.crt\n  key_file: nope/server.key\n");
        let files = AccessFiles { web_config: Some(path.clone()), token_file: None };
        let e = files.load().err().unwrap();
        let cert = path.parent().unwrap().join("nope/server.crt");
        assert!(e.starts_with(&format!("web config {}: ", path.display())), "{e}");
        assert!(e.contains(&format!("tls_server_config.cert_file {}: ", cert.display())), "{e}");
        assert!(e.contains("No such file"), "{e}");
    }

    #[test]
    fn a_token_file_is_read_trimmed_and_never_echoed() {
        let ok = temp("token", "s3cr3t-token\n");
        let access = AccessFiles { web_config: None, token_file: Some(ok) }.load().unwrap();
        assert!(access.credentials.required() && access.tls.is_none());
        for (name, text) in [("empty", "\n"), ("spaces", "s3cr3t token\n"), ("lines", "s3cr3t\nmore\n")] {
            let e = AccessFiles { web_config: None, token_file: Some(temp(name, text)) }.load().err().unwrap();
            assert!(e.starts_with("--auth-token-file ") && !e.contains("s3cr3t"), "{e}");
        }
        let e = AccessFiles { web_config: None, token_file: Some("/nonexistent/token".into()) }.load().err().unwrap();
        assert!(e.contains("/nonexistent/token") && e.contains("No such file"), "{e}");
    }

    #[test]
    fn a_failed_reload_keeps_the_access_in_force() {
        let token = temp("reload-token", "first\n");
        let files = AccessFiles { web_config: None, token_file: Some(token.clone()) };
        let live = LiveAccess::new(files.load().unwrap());
        let before = live.current();
        std::fs::write(&token, "").unwrap();
        assert!(live.reload(&files).is_err());
        assert!(Arc::ptr_eq(&before, &live.current()));
        std::fs::write(&token, "second\n").unwrap();
        live.reload(&files).unwrap();
        assert!(!Arc::ptr_eq(&before, &live.current()));
    }
}

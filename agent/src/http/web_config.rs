//! `--web-config`: the Prometheus exporter toolkit's web configuration file
//! (`--web.config.file` of node_exporter), so that operators reuse what they
//! have. Strict like the toolkit: an unknown key is an error.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt          # relative paths are relative to this file
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert
//!   client_ca_file: clients-ca.crt
//!   min_version: TLS12
//! basic_auth_users:
//!   prometheus: $2y$10$…           # bcrypt
//! ```
//!
//! Error messages name the file and the key, never a value that may be secret
//! (a hash, a password, a key).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    str::FromStr,
};

use serde::Deserialize;

/// The highest bcrypt cost accepted. Every step doubles the CPU of a check
/// (measured here: cost 10 about 60 ms of a core, 12 about 240 ms, 14 a
/// second); checks of wrong passwords are budgeted by count (budget.rs), so a
/// higher cost would turn the same budget into more CPU than it promises.
pub const MAX_BCRYPT_COST: u32 = 12;

/// What the file asks for, with paths resolved against its directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebConfig {
    pub tls: Option<TlsSettings>,
    /// User → bcrypt hash.
    pub users: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_auth: ClientAuth,
    pub client_ca_file: Option<PathBuf>,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
}

/// `client_auth_type`, as far as it is supported: the toolkit's
/// `RequestClientCert` and `RequireAnyClientCert` ask for a certificate
/// without verifying it, which proves nothing; they are refused with a
/// message saying what to use instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    NoClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

// The file as written. Values that may be secret are read as untyped YAML
// so that a wrong type is reported without echoing the value (serde's own
// messages quote it).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    tls_server_config: Option<RawTls>,
    basic_auth_users: Option<BTreeMap<String, serde_yaml_ng::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
}

/// Reads and checks `path`. The message names the file.
pub fn read(path: &Path) -> Result<WebConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("web config {}: {e}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, dir).map_err(|e| format!("web config {}: {e}", path.display()))
}

/// Parses the file's text; relative paths are taken from `dir`.
pub fn parse(text: &str, dir: &Path) -> Result<WebConfig, String> {
    // An empty file (or only comments) is the toolkit's "no TLS, no users".
    let raw: RawFile = match serde_yaml_ng::from_str::<Option<RawFile>>(text) {
        Ok(raw) => raw.unwrap_or_default(),
        Err(e) => return Err(e.to_string()),
    };
    let mut users = BTreeMap::new();
    for (user, hash) in raw.basic_auth_users.unwrap_or_default() {
        let serde_yaml_ng::Value::String(hash) = hash else {
            return Err(format!("basic_auth_users: the hash of user {user:?} is not a string"));
        };
        let Ok(parts) = bcrypt::HashParts::from_str(&hash) else {
            return Err(format!(
                "basic_auth_users: the hash of user {user:?} is not a bcrypt hash ($2a$, $2b$ or $2y$, 60 \
                 characters; make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)"
            ));
        };
        if parts.get_cost() > MAX_BCRYPT_COST {
            return Err(format!(
                "basic_auth_users: the hash of user {user:?} has cost {}, above the highest accepted, \
                 {MAX_BCRYPT_COST} (each step doubles the CPU of every check): hash the password again with a \
                 lower cost, e.g. `htpasswd -nBC 10 \"\" | tr -d ':\\n'`",
                parts.get_cost()
            ));
        }
        if user.contains(':') {
            return Err(format!(
                "basic_auth_users: user {user:?}: a user name cannot hold ':' (basic auth splits on it)"
            ));
        }
        users.insert(user, hash);
    }
    let tls = raw.tls_server_config.map(|t| tls_settings(t, dir)).transpose()?;
    Ok(WebConfig { tls, users })
}

fn tls_settings(raw: RawTls, dir: &Path) -> Result<TlsSettings, String> {
    let path = |key: &str, value: Option<String>| -> Result<Option<PathBuf>, String> {
        match value {
            Some(v) if v.is_empty() => Err(format!("tls_server_config.{key} is empty")),
            Some(v) => Ok(Some(dir.join(v))),
            None => Ok(None),
        }
    };
    let cert_file = path("cert_file", raw.cert_file)?.ok_or("tls_server_config: cert_file is missing")?;
    let key_file = path("key_file", raw.key_file)?.ok_or("tls_server_config: key_file is missing")?;
    let client_ca_file = path("client_ca_file", raw.client_ca_file)?;
    let client_auth = match raw.client_auth_type.as_deref() {
        None | Some("") | Some("NoClientCert") => ClientAuth::NoClientCert,
        Some("VerifyClientCertIfGiven") => ClientAuth::VerifyClientCertIfGiven,
        Some("RequireAndVerifyClientCert") => ClientAuth::RequireAndVerifyClientCert,
        Some(other @ ("RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert")) => {
            return Err(format!(
                "tls_server_config.client_auth_type: {other} accepts client certificates without verifying them, \
                 which pywats-agent does not support: use VerifyClientCertIfGiven or RequireAndVerifyClientCert \
                 with client_ca_file"
            ))
        }
        Some(other) => {
            return Err(format!(
                "tls_server_config.client_auth_type: unknown value {other:?} (expected NoClientCert, \
                 VerifyClientCertIfGiven or RequireAndVerifyClientCert)"
            ))
        }
    };
    match (client_auth, &client_ca_file) {
        (ClientAuth::NoClientCert, Some(_)) => {
            return Err("tls_server_config: client_ca_file is set but client_auth_type is NoClientCert: set \
                        client_auth_type to RequireAndVerifyClientCert or VerifyClientCertIfGiven"
                .into())
        }
        (ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert, None) => {
            return Err("tls_server_config: client_auth_type verifies client certificates but client_ca_file \
                        is missing"
                .into())
        }
        _ => {}
    }
    let version = |key: &str, value: Option<String>, default: TlsVersion| -> Result<TlsVersion, String> {
        match value.as_deref() {
            None | Some("") => Ok(default),
            Some("TLS12") => Ok(TlsVersion::Tls12),
            Some("TLS13") => Ok(TlsVersion::Tls13),
            Some(v @ ("TLS10" | "TLS11")) => Err(format!(
                "tls_server_config.{key}: {v} is not supported (TLS 1.2 is the oldest): use TLS12 or TLS13"
            )),
            Some(v) => Err(format!("tls_server_config.{key}: unknown value {v:?} (expected TLS12 or TLS13)")),
        }
    };
    let min_version = version("min_version", raw.min_version, TlsVersion::Tls12)?;
    let max_version = version("max_version", raw.max_version, TlsVersion::Tls13)?;
    if min_version > max_version {
        return Err("tls_server_config: min_version is above max_version".into());
    }
    Ok(TlsSettings { cert_file, key_file, client_auth, client_ca_file, min_version, max_version })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// bcrypt of "example-password" at cost 4 (cheap to verify).
    fn hash() -> String {
        bcrypt::hash("example-password", 4).unwrap()
    }

    fn dir() -> &'static Path {
        Path::new("/etc/pywats-agent")
    }

    #[test]
    fn a_complete_file() {
        let hash = hash();
        let text = format!(
            "# comment\ntls_server_config:\n  cert_file: server.crt\n  key_file: /keys/server.key\n  \
             client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  min_version: TLS13\n\
             basic_auth_users:\n  prometheus: '{hash}'\n  other: \"{hash}\"\n"
        );
        let c = parse(&text, dir()).unwrap();
        assert_eq!(
            c.tls,
            Some(TlsSettings {
                cert_file: "/etc/pywats-agent/server.crt".into(),
                key_file: "/keys/server.key".into(),
                client_auth: ClientAuth::RequireAndVerifyClientCert,
                client_ca_file: Some("/etc/pywats-agent/ca.crt".into()),
                min_version: TlsVersion::Tls13,
                max_version: TlsVersion::Tls13,
            })
        );
        assert_eq!(c.users.len(), 2);
        assert_eq!(c.users["prometheus"], hash);
        assert!(bcrypt::verify("example-password", &c.users["other"]).unwrap());
    }

    /// The README's example works: it parses, and its hash is of the documented password.
    #[test]
    fn the_example_file() {
        let c = parse(include_str!("../../../deploy/web-config.yml"), dir()).unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.cert_file, Path::new("/etc/pywats-agent/tls/server.crt"));
        assert_eq!(tls.client_auth, ClientAuth::NoClientCert);
        assert!(bcrypt::verify("change-me-example", &c.users["prometheus"]).unwrap());
    }

    #[test]
    fn empty_and_partial_files() {
        assert_eq!(parse("", dir()).unwrap(), WebConfig::default());
        assert_eq!(parse("# nothing\n", dir()).unwrap(), WebConfig::default());
        let users_only = parse(&format!("basic_auth_users:\n  u: '{}'\n", hash()), dir()).unwrap();
        assert_eq!((users_only.tls, users_only.users.len()), (None, 1));
        let tls_only = parse("tls_server_config:\n  cert_file: c\n  key_file: k\n", dir()).unwrap();
        let tls = tls_only.tls.unwrap();
        assert_eq!(
            (tls.client_auth, tls.min_version, tls.max_version),
            (ClientAuth::NoClientCert, TlsVersion::Tls12, TlsVersion::Tls13)
        );
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let e = parse("tls_server_config:\n  cert_file: c\n  key_file: k\n  cipher_suites: [x]\n", dir()).unwrap_err();
        assert!(e.contains("unknown field `cipher_suites`") && e.contains("line 4"), "{e}");
        let e = parse("http_server_config:\n  http2: false\n", dir()).unwrap_err();
        assert!(e.contains("unknown field `http_server_config`"), "{e}");
    }

    #[test]
    fn client_auth_types() {
        let with = |auth: &str, ca: bool| {
            let ca = if ca { "  client_ca_file: ca.crt\n" } else { "" };
            parse(
                &format!("tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: {auth}\n{ca}"),
                dir(),
            )
        };
        assert_eq!(
            with("VerifyClientCertIfGiven", true).unwrap().tls.unwrap().client_auth,
            ClientAuth::VerifyClientCertIfGiven
        );
        assert_eq!(with("NoClientCert", false).unwrap().tls.unwrap().client_auth, ClientAuth::NoClientCert);
        let e = with("RequireAndVerifyClientCertPlease", true).unwrap_err();
        assert!(e.contains("client_auth_type: unknown value \"RequireAndVerifyClientCertPlease\""), "{e}");
        let e = with("RequireAnyClientCert", true).unwrap_err();
        assert!(e.contains("does not support") && e.contains("RequireAndVerifyClientCert"), "{e}");
        let e = with("RequireAndVerifyClientCert", false).unwrap_err();
        assert!(e.contains("client_ca_file is missing"), "{e}");
        let e = with("NoClientCert", true).unwrap_err();
        assert!(e.contains("client_ca_file is set but client_auth_type is NoClientCert"), "{e}");
    }

    #[test]
    fn versions_and_required_files() {
        let with = |extra: &str| parse(&format!("tls_server_config:\n  cert_file: c\n  key_file: k\n{extra}"), dir());
        assert!(with("  min_version: TLS10\n").unwrap_err().contains("min_version: TLS10 is not supported"));
        assert!(with("  max_version: SSL3\n").unwrap_err().contains("max_version: unknown value \"SSL3\""));
        assert!(with("  min_version: TLS13\n  max_version: TLS12\n").unwrap_err().contains("above max_version"));
        assert_eq!(
            parse("tls_server_config:\n  key_file: k\n", dir()).unwrap_err(),
            "tls_server_config: cert_file is missing"
        );
        assert_eq!(
            parse("tls_server_config:\n  cert_file: c\n", dir()).unwrap_err(),
            "tls_server_config: key_file is missing"
        );
    }

    #[test]
    fn a_bcrypt_cost_above_the_maximum_is_refused() {
        let at_max = bcrypt::hash("pw", MAX_BCRYPT_COST).unwrap();
        assert_eq!(parse(&format!("basic_auth_users:\n  u: '{at_max}'\n"), dir()).unwrap().users.len(), 1);
        // A hash of cost 13 without paying for it: the cost is two digits of the hash.
        let above = format!("{}13{}", &at_max[..4], &at_max[6..]);
        let e = parse(&format!("basic_auth_users:\n  u: '{above}'\n"), dir()).unwrap_err();
        assert_eq!(
            e,
            "basic_auth_users: the hash of user \"u\" has cost 13, above the highest accepted, 12 (each step \
             doubles the CPU of every check): hash the password again with a lower cost, e.g. `htpasswd -nBC 10 \
             \"\" | tr -d ':\\n'`"
        );
        assert!(!e.contains(&above[7..]), "the hash is not echoed");
    }

    #[test]
    fn the_file_is_named_and_a_missing_file_said() {
        let e = read(Path::new("/nonexistent/web.yml")).unwrap_err();
        assert!(e.starts_with("web config /nonexistent/web.yml: ") && e.contains("No such file"), "{e}");
    }

    #[test]
    fn no_secret_in_error_messages() {
        // A hash that is not a string, a hash that is not bcrypt, a password
        // written where a hash belongs: the message names the user, not the value.
        for value in ["12345678901", "'not-a-hash-s3cr3t'", "[s3cr3t]", "{a: s3cr3t}", "'$2y$10$s3cr3t'"] {
            let e = parse(&format!("basic_auth_users:\n  alice: {value}\n"), dir()).unwrap_err();
            assert!(e.contains("user \"alice\""), "{e}");
            assert!(!e.contains("s3cr3t") && !e.contains("12345678901"), "{e}");
        }
        // A well-formed hash after a syntax error is not echoed either.
        let hash = hash();
        let e = parse(&format!("basic_auth_users:\n  alice: '{hash}'\n bob: : x\n"), dir()).unwrap_err();
        assert!(!e.contains(&hash[7..]), "{e}");
        let e = parse(&format!("basic_auth_users:\n  'a:b': '{hash}'\n"), dir()).unwrap_err();
        assert!(e.contains("cannot hold ':'") && !e.contains(&hash[7..]), "{e}");
    }
}

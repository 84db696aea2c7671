//! A test certificate authority made with `openssl` in a temporary
//! directory: server certificates for 127.0.0.1 and client certificates,
//! ECDSA P-256 (quick to make), valid for two days.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

pub struct Pki {
    pub dir: PathBuf,
    name: String,
}

/// A certificate and its key.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Pki {
    /// A new CA named `name`, in a fresh directory.
    pub fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("pywats-agent-pki-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (key, cert) = (format!("{name}-ca.key"), format!("{name}-ca.crt"));
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={name} test CA"),
                "-keyout",
                &key,
                "-out",
                &cert,
            ],
            &dir,
        );
        Pki { dir, name: name.to_string() }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.crt", self.name))
    }

    /// A server certificate for 127.0.0.1.
    pub fn server(&self, name: &str) -> Issued {
        self.issue(name, "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    }

    /// A client certificate.
    pub fn client(&self, name: &str) -> Issued {
        self.issue(name, "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n")
    }

    fn issue(&self, name: &str, extensions: &str) -> Issued {
        let ext = format!("{name}.ext");
        std::fs::write(self.dir.join(&ext), extensions).unwrap();
        let (key, csr, cert) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"));
        openssl(
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &key,
                "-out",
                &csr,
            ],
            &self.dir,
        );
        let (ca_key, ca_cert) = (format!("{}-ca.key", self.name), format!("{}-ca.crt", self.name));
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_cert,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &cert,
            ],
            &self.dir,
        );
        Issued { cert: self.dir.join(cert), key: self.dir.join(key) }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

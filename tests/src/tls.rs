//! TLS for the tests: a self-signed certificate for 127.0.0.1, the HTTP/2
//! test server, and GETs to the test servers over HTTPS from a helper process
//! (never the watched client).

use std::{
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use crate::{py, py::python, wait_for};

/// (certificate, key) made once per test run with `openssl`.
pub fn cert() -> (PathBuf, PathBuf) {
    static MADE: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    MADE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("pywats-agent-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let status = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("run openssl");
        assert!(status.status.success(), "openssl: {}", String::from_utf8_lossy(&status.stderr));
        (cert, key)
    })
    .clone()
}

/// The body of `GET https://127.0.0.1:<port><path>` (certificate not verified).
pub fn get(port: u16, path: &str) -> String {
    try_get(port, path).unwrap_or_else(|e| panic!("GET https://127.0.0.1:{port}{path}: {e}"))
}

pub fn try_get(port: u16, path: &str) -> Result<String, String> {
    let script = format!(
        "import ssl, urllib.request; print(urllib.request.urlopen('https://127.0.0.1:{port}{path}', \
         context=ssl._create_unverified_context()).read().decode())"
    );
    let out = Command::new(python()).args(["-c", &script]).output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    String::from_utf8(out.stdout).map_err(|e| e.to_string())
}

/// `tests/py/h2_app.py` under hypercorn (HTTPS, ALPN h2), killed when dropped.
pub struct Hypercorn(Child);

impl Hypercorn {
    /// Starts it on 127.0.0.1:`port` and waits until it answers.
    pub fn start(port: u16) -> Hypercorn {
        let (cert, key) = cert();
        let child = Command::new(python())
            .args(["-m", "hypercorn", "--certfile"])
            .arg(&cert)
            .arg("--keyfile")
            .arg(&key)
            .args(["--bind", &format!("127.0.0.1:{port}"), "h2_app:app"])
            .current_dir(py::script(""))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group: its worker process is killed with it.
            .process_group(0)
            .spawn()
            .expect("start hypercorn");
        let server = Hypercorn(child);
        wait_for(Duration::from_secs(20), "hypercorn to serve", || try_get(port, "/__counts").ok());
        server
    }
}

impl Drop for Hypercorn {
    fn drop(&mut self) {
        // SAFETY: signals the group this struct created; its leader is not reaped yet.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

//! A minimal HTTP/1.1 GET for talking to the agent (Connection: close; a
//! chunked body, as Prometheus' API sends, is joined), over plain TCP
//! or TLS (rustls, verifying the agent's certificate against a test CA,
//! optionally with a client certificate), with optional credentials.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    sync::Arc,
    time::Duration,
};

use base64::Engine;
use rustls::{
    crypto::ring,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName},
    ClientConfig, ClientConnection, RootCertStore, StreamOwned,
};

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The certificate the server presented (TLS only), DER.
    pub server_cert: Option<Vec<u8>>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }
}

/// How to reach the agent: plain or TLS, with or without credentials.
#[derive(Clone, Default)]
pub struct Client {
    tls: Option<Arc<ClientConfig>>,
    authorization: Option<String>,
}

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path).unwrap().collect::<Result<_, _>>().unwrap()
}

impl Client {
    /// Plain HTTP, no credentials.
    pub fn plain() -> Client {
        Client::default()
    }

    /// TLS, trusting `ca`; with `identity` (certificate, key) as client certificate.
    pub fn tls(ca: &Path, identity: Option<(&Path, &Path)>) -> Client {
        let mut roots = RootCertStore::empty();
        for c in certs(ca) {
            roots.add(c).unwrap();
        }
        let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match identity {
            Some((cert, key)) => {
                builder.with_client_auth_cert(certs(cert), PrivateKeyDer::from_pem_file(key).unwrap()).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        Client { tls: Some(Arc::new(config)), authorization: None }
    }

    pub fn basic(mut self, user: &str, password: &str) -> Client {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.authorization = Some(format!("Basic {token}"));
        self
    }

    pub fn bearer(mut self, token: &str) -> Client {
        self.authorization = Some(format!("Bearer {token}"));
        self
    }

    /// Without credentials, the same transport.
    pub fn anonymous(&self) -> Client {
        Client { tls: self.tls.clone(), authorization: None }
    }

    pub fn get(&self, port: u16, path: &str) -> std::io::Result<Response> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let auth = self.authorization.as_ref().map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n");
        let Some(config) = &self.tls else {
            let mut s = s;
            s.write_all(request.as_bytes())?;
            let mut raw = Vec::new();
            s.read_to_end(&mut raw)?;
            return parse(&raw, None);
        };
        let name = ServerName::try_from("127.0.0.1").expect("an IP address");
        let conn = ClientConnection::new(config.clone(), name).map_err(std::io::Error::other)?;
        let mut tls = StreamOwned::new(conn, s);
        tls.write_all(request.as_bytes())?;
        let mut raw = Vec::new();
        tls.read_to_end(&mut raw)?;
        let server_cert = tls.conn.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec());
        parse(&raw, server_cert)
    }
}

fn parse(raw: &[u8], server_cert: Option<Vec<u8>>) -> std::io::Result<Response> {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| std::io::Error::other("no header end"))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))).collect();
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked { dechunk(body)? } else { body.to_string() };
    Ok(Response { status, headers, body, server_cert })
}

fn dechunk(mut rest: &str) -> std::io::Result<String> {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").ok_or_else(|| std::io::Error::other("bad chunk"))?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| std::io::Error::other("bad chunk size"))?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(after.get(..size).ok_or_else(|| std::io::Error::other("short chunk"))?);
        rest = after.get(size + 2..).ok_or_else(|| std::io::Error::other("short chunk"))?;
    }
}

pub fn get(port: u16, path: &str) -> std::io::Result<Response> {
    Client::plain().get(port, path)
}

/// A response's status, headers and body bytes as sent (compressed ones too).
pub type RawResponse = (u16, Vec<(String, String)>, Vec<u8>);

/// A GET over plain HTTP with extra request headers (the body not chunked).
pub fn get_bytes(port: u16, path: &str, headers: &[(&str, &str)]) -> std::io::Result<RawResponse> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n").as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = parse(&raw[..end + 4], None)?;
    Ok((head.status, head.headers, raw[end + 4..].to_vec()))
}

/// A connection to 127.0.0.1:`port` from `source`, any loopback address
/// (all of 127.0.0.0/8 is the machine itself): a peer of its own, as the
/// agent's per-peer limits count them.
pub fn connect_from(source: std::net::Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a new socket, owned by the TcpStream as soon as it exists.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a socket we own.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let (from, to) = (sockaddr(source, 0), sockaddr(std::net::Ipv4Addr::LOCALHOST, port));
    // SAFETY: valid sockaddr_in structs of the given length.
    if unsafe { libc::bind(fd, (&from as *const libc::sockaddr_in).cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::connect(fd, (&to as *const libc::sockaddr_in).cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stream)
}

/// A byte stream to the agent: plain TCP or TLS.
trait Stream: Read + Write + Send {}

impl<T: Read + Write + Send> Stream for T {}

/// One connection for many requests: it still serves when the agent can
/// open no new file (its fds exhausted), as a connection open before does.
pub struct KeepAlive {
    stream: std::io::BufReader<Box<dyn Stream>>,
}

impl KeepAlive {
    pub fn connect(port: u16) -> std::io::Result<KeepAlive> {
        Self::over(TcpStream::connect(("127.0.0.1", port))?, None)
    }

    /// From `source` (see [`connect_from`]), over TLS when `client` is a TLS one.
    pub fn connect_from(source: std::net::Ipv4Addr, port: u16, client: &Client) -> std::io::Result<KeepAlive> {
        Self::over(connect_from(source, port)?, client.tls.clone())
    }

    fn over(s: TcpStream, tls: Option<Arc<ClientConfig>>) -> std::io::Result<KeepAlive> {
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let stream: Box<dyn Stream> = match tls {
            None => Box::new(s),
            Some(config) => {
                let name = ServerName::try_from("127.0.0.1").expect("an IP address");
                let conn = ClientConnection::new(config, name).map_err(std::io::Error::other)?;
                Box::new(StreamOwned::new(conn, s))
            }
        };
        Ok(KeepAlive { stream: std::io::BufReader::new(stream) })
    }

    pub fn get(&mut self, path: &str) -> std::io::Result<Response> {
        self.get_with(path, None)
    }

    /// With an `Authorization` value.
    pub fn get_with(&mut self, path: &str, authorization: Option<&str>) -> std::io::Result<Response> {
        use std::io::BufRead;
        let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
        // One write: a request in pieces waits for the server's delayed ACK (Nagle).
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n");
        self.stream.get_mut().write_all(request.as_bytes())?;
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            if self.stream.read_line(&mut line)? == 0 {
                return Err(std::io::Error::other("connection closed"));
            }
            if line == "\r\n" {
                break;
            }
            head.push(line.trim_end().to_string());
        }
        let status = head
            .first()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other("bad status line"))?;
        let headers: Vec<(String, String)> = head[1..]
            .iter()
            .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
            .collect();
        let length = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .ok_or_else(|| std::io::Error::other("no Content-Length"))?;
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body)?;
        Ok(Response { status, headers, body: String::from_utf8_lossy(&body).into_owned(), server_cert: None })
    }
}

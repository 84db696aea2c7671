//! What a scrape asks for: the exposition format (`Accept`: OpenMetrics
//! when asked for it, else the Prometheus text format) and the compression
//! (`Accept-Encoding`: zstd or gzip when accepted, else none), and the
//! compression itself.

use std::io::Write as _;

use axum::http::{header, HeaderMap};

use crate::metrics::{openmetrics, Metrics};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// The Prometheus text format 0.0.4: the default.
    Text,
    /// OpenMetrics 1.0, with exemplars.
    OpenMetrics,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => Metrics::CONTENT_TYPE,
            Format::OpenMetrics => openmetrics::CONTENT_TYPE,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

impl Encoding {
    /// The `Content-Encoding` value; none for identity.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Encoding::Identity => None,
            Encoding::Gzip => Some("gzip"),
            Encoding::Zstd => Some("zstd"),
        }
    }

    /// `body` compressed. Levels for speed: a scrape's text is repetitive,
    /// and the agent's CPU is the station's.
    pub fn apply(self, body: &[u8]) -> std::io::Result<Vec<u8>> {
        match self {
            Encoding::Identity => Ok(body.to_vec()),
            Encoding::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 8), GZIP_LEVEL);
                gz.write_all(body)?;
                gz.finish()
            }
            Encoding::Zstd => zstd::bulk::compress(body, ZSTD_LEVEL),
        }
    }
}

const GZIP_LEVEL: flate2::Compression = flate2::Compression::new(1);
const ZSTD_LEVEL: i32 = 1;

/// One response body: a format, compressed or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Variant {
    pub format: Format,
    pub encoding: Encoding,
}

impl Variant {
    pub fn of(headers: &HeaderMap) -> Variant {
        let list = |name| headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
        Variant { format: format(&list(header::ACCEPT)), encoding: encoding(&list(header::ACCEPT_ENCODING)) }
    }
}

/// Each element of a comma-separated header: its value (lower case, no
/// parameters) and its `q` (1 when absent; an unreadable one counts as 0).
fn weighted(list: &str) -> impl Iterator<Item = (String, f32, Vec<(String, String)>)> + '_ {
    list.split(',').filter(|e| !e.trim().is_empty()).map(|element| {
        let mut parts = element.split(';');
        let value = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let mut q = 1.0;
        let mut params = Vec::new();
        for p in parts {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().trim_matches('"').to_string());
            if k == "q" {
                q = v.parse::<f32>().ok().filter(|q| (0.0..=1.0).contains(q)).unwrap_or(0.0);
            } else {
                params.push((k, v));
            }
        }
        (value, q, params)
    })
}

/// OpenMetrics (1.0.0 or its draft 0.0.1, which Prometheus also asks for)
/// when a scraper weighs it at least as high as the text format.
fn format(accept: &str) -> Format {
    let (mut openmetrics, mut text) = (0.0f32, 0.0f32);
    for (value, q, params) in weighted(accept) {
        let version = params.iter().find(|(k, _)| k == "version").map(|(_, v)| v.as_str());
        match value.as_str() {
            "application/openmetrics-text" if matches!(version, None | Some("1.0.0") | Some("0.0.1")) => {
                openmetrics = openmetrics.max(q)
            }
            "text/plain" | "text/*" | "*/*" => text = text.max(q),
            _ => {}
        }
    }
    if openmetrics > 0.0 && openmetrics >= text {
        Format::OpenMetrics
    } else {
        Format::Text
    }
}

/// zstd or gzip, whichever is weighed higher (zstd on a tie: smaller and
/// cheaper); `*` stands for either; none when neither is accepted.
fn encoding(accept_encoding: &str) -> Encoding {
    let (mut gzip, mut zstd, mut any) = (None, None, None);
    for (value, q, _) in weighted(accept_encoding) {
        match value.as_str() {
            "gzip" | "x-gzip" => gzip = Some(q),
            "zstd" => zstd = Some(q),
            "*" => any = Some(q),
            _ => {}
        }
    }
    let (gzip, zstd) = (gzip.or(any).unwrap_or(0.0), zstd.or(any).unwrap_or(0.0));
    if zstd > 0.0 && zstd >= gzip {
        Encoding::Zstd
    } else if gzip > 0.0 {
        Encoding::Gzip
    } else {
        Encoding::Identity
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    /// What Prometheus 2.42 sends with every scrape.
    const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                                     version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

    #[test]
    fn openmetrics_only_when_asked_for() {
        assert_eq!(format(PROMETHEUS_ACCEPT), Format::OpenMetrics);
        assert_eq!(format("application/openmetrics-text"), Format::OpenMetrics);
        for text in [
            "",
            "*/*",
            "text/plain;version=0.0.4",
            "text/plain, application/openmetrics-text;q=0.5",
            "application/openmetrics-text;q=0",
            "application/openmetrics-text;version=2.0.0",
            "application/openmetrics-text;q=nonsense",
            "application/json",
            ",,;;==",
        ] {
            assert_eq!(format(text), Format::Text, "{text:?}");
        }
    }

    #[test]
    fn compression_only_when_accepted() {
        assert_eq!(encoding("gzip"), Encoding::Gzip);
        assert_eq!(encoding("deflate, gzip, br, zstd"), Encoding::Zstd);
        assert_eq!(encoding("zstd;q=0.5, gzip"), Encoding::Gzip);
        assert_eq!(encoding("*"), Encoding::Zstd);
        assert_eq!(encoding("gzip;q=0, *;q=0.1"), Encoding::Zstd);
        for none in ["", "identity", "br", "gzip;q=0", "zstd;q=0,gzip;q=0", "*;q=0"] {
            assert_eq!(encoding(none), Encoding::Identity, "{none:?}");
        }
    }

    #[test]
    fn headers_repeated_or_not() {
        let mut h = HeaderMap::new();
        h.append(header::ACCEPT_ENCODING, "br".parse().unwrap());
        h.append(header::ACCEPT_ENCODING, "gzip".parse().unwrap());
        h.insert(header::ACCEPT, PROMETHEUS_ACCEPT.parse().unwrap());
        assert_eq!(Variant::of(&h), Variant { format: Format::OpenMetrics, encoding: Encoding::Gzip });
        assert_eq!(Variant::of(&HeaderMap::new()), Variant { format: Format::Text, encoding: Encoding::Identity });
    }

    #[test]
    fn compressed_bodies_decompress_to_the_text() {
        let text = "pywats_http_requests_total{code=\"200\"} 1\n".repeat(1000);
        let mut gz = String::new();
        flate2::read::GzDecoder::new(&Encoding::Gzip.apply(text.as_bytes()).unwrap()[..])
            .read_to_string(&mut gz)
            .unwrap();
        assert_eq!(gz, text);
        let zst = zstd::bulk::decompress(&Encoding::Zstd.apply(text.as_bytes()).unwrap(), text.len()).unwrap();
        assert_eq!(zst, text.as_bytes());
    }
}

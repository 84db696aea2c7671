//! `pywats_agent_http_requests_total{path, code}`: every request the server
//! takes, by route (never the raw path: unknown paths are `other`, so a
//! scanner cannot grow the label set) and status code, or `none` when it
//! got no answer (its client left first, or the agent shut down). Counted
//! from the moment hyper hands the request over, so also a request whose
//! client is gone before it was looked at.

use std::sync::Arc;

use axum::http::StatusCode;
use prometheus::IntCounterVec;

#[derive(Clone)]
pub struct Requests {
    routes: Arc<[&'static str]>,
    counter: IntCounterVec,
}

impl Requests {
    pub fn new(counter: IntCounterVec, routes: Vec<&'static str>) -> Requests {
        Requests { routes: routes.into(), counter }
    }

    /// A request for `path` arrived: counted once, when answered or dropped.
    pub fn begin(&self, path: &str) -> Pending {
        let route = self.routes.iter().copied().find(|&r| r == path).unwrap_or("other");
        Pending { counter: self.counter.clone(), route, answered: false }
    }
}

pub struct Pending {
    counter: IntCounterVec,
    route: &'static str,
    answered: bool,
}

impl Pending {
    pub fn answered(mut self, status: StatusCode) {
        self.counter.with_label_values(&[self.route, status.as_str()]).inc();
        self.answered = true;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.answered {
            self.counter.with_label_values(&[self.route, "none"]).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus::Opts;

    use super::*;

    #[test]
    fn by_route_and_code_or_none() {
        let counter = IntCounterVec::new(Opts::new("t", "t"), &["path", "code"]).unwrap();
        let r = Requests::new(counter.clone(), vec!["/metrics", "/health"]);
        r.begin("/metrics").answered(StatusCode::OK);
        r.begin("/metrics?x=1").answered(StatusCode::NOT_FOUND);
        r.begin("/health/").answered(StatusCode::NOT_FOUND);
        drop(r.begin("/metrics"));
        let get = |path, code| counter.with_label_values(&[path, code]).get();
        assert_eq!((get("/metrics", "200"), get("/metrics", "none"), get("other", "404")), (1, 1, 2));
    }
}

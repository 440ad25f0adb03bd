//! A local IMDS stub that enforces the IMDSv2 session flow the way EC2 does: a token only
//! from `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds`, and every
//! metadata GET refused with 401 unless it carries a token the stub issued.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

#[derive(Default)]
pub struct StubState {
    /// (mac, interface-id, device-number)
    pub interfaces: Vec<(String, String, u32)>,
    pub primary_mac: String,
    pub tokens: BTreeSet<String>,
    pub issued: usize,
    /// (method, path, outcome status)
    pub log: Vec<(String, String, u16)>,
}

pub struct ImdsStub {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<StubState>>,
}

impl ImdsStub {
    pub async fn start(interfaces: &[(&str, &str, u32)]) -> Self {
        let state = Arc::new(Mutex::new(StubState {
            interfaces: interfaces
                .iter()
                .map(|(m, e, d)| (m.to_string(), e.to_string(), *d))
                .collect(),
            primary_mac: interfaces
                .iter()
                .find(|i| i.2 == 0)
                .map(|i| i.0.to_string())
                .unwrap_or_default(),
            ..Default::default()
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(handle(&st, req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, state }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Expires every token (the agent must fetch a new one).
    pub fn expire_tokens(&self) {
        self.state.lock().expect("lock").tokens.clear();
    }

    pub fn log(&self) -> Vec<(String, String, u16)> {
        self.state.lock().expect("lock").log.clone()
    }
}

fn handle(state: &Mutex<StubState>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let mut st = state.lock().expect("lock");
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let (status, body) = respond(&mut st, &req);
    st.log.push((method, path, status));
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}

fn respond(st: &mut StubState, req: &Request<Incoming>) -> (u16, String) {
    let path = req.uri().path();
    if path == "/latest/api/token" {
        if req.method() != hyper::Method::PUT {
            return (405, "token requests must be PUT".into());
        }
        let ttl = req
            .headers()
            .get("x-aws-ec2-metadata-token-ttl-seconds")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok());
        if !matches!(ttl, Some(1..=21600)) {
            return (
                400,
                "missing or invalid X-aws-ec2-metadata-token-ttl-seconds".into(),
            );
        }
        st.issued += 1;
        let token = format!("AQAEA-token-{}", st.issued);
        st.tokens.insert(token.clone());
        return (200, token);
    }
    if req.method() != hyper::Method::GET {
        return (405, String::new());
    }
    let token = req
        .headers()
        .get("x-aws-ec2-metadata-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !st.tokens.contains(token) {
        return (401, String::new());
    }
    let Some(rest) = path.strip_prefix("/latest/meta-data/") else {
        return (404, String::new());
    };
    if rest == "mac" {
        return (200, st.primary_mac.clone());
    }
    if rest == "network/interfaces/macs/" || rest == "network/interfaces/macs" {
        return (
            200,
            st.interfaces
                .iter()
                .map(|i| format!("{}/", i.0))
                .collect::<Vec<_>>()
                .join("\n"),
        );
    }
    if let Some(tail) = rest.strip_prefix("network/interfaces/macs/")
        && let Some((mac, leaf)) = tail.split_once('/')
        && let Some(i) = st.interfaces.iter().find(|i| i.0 == mac)
    {
        return match leaf {
            "interface-id" => (200, i.1.clone()),
            "device-number" => (200, i.2.to_string()),
            "mac" => (200, i.0.clone()),
            _ => (404, String::new()),
        };
    }
    (404, String::new())
}

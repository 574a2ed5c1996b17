//! Load generator for the API benchmark (issue 16): N clients in a closed
//! loop, each on its own kept-alive HTTPS connection with one cached
//! token, or each calling the control socket as the CLI does; prints one
//! JSON line with requests/s and latency percentiles.
//!
//! usage: api_load --door api|socket --op user|check|token|change --clients N --seconds S
//!                 [--url https://HOST:PORT --cacert F] [--socket PATH]
//!        api_load --op flood --clients N --seconds S --url … --cacert F
//!            (N clients from 127.0.0.2 send wrong secrets for the key as
//!             fast as they are answered; one client from 127.0.0.1 asks
//!             for a token with the right one every 100 ms: its latencies
//!             and statuses are what is printed)
//! `change`: client i attaches ReadOnly to user `load{i}` and detaches it,
//! in turn (each one directory change); the users must exist.
//! The access key comes from METERGATE_KEY_ID and METERGATE_KEY_SECRET.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use metergate::doors::admin::protocol::Request as SocketRequest;
use metergate::doors::admin::server::call;
use tokio::net::TcpSocket;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

#[derive(Clone)]
struct Args {
    door: String,
    op: String,
    clients: usize,
    seconds: f64,
    addr: SocketAddr,
    tls: Option<TlsConnector>,
    socket: PathBuf,
    key_id: String,
    secret: String,
}

fn parse() -> Result<Args, String> {
    let mut m: BTreeMap<String, String> = BTreeMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        m.insert(k.trim_start_matches("--").to_string(), v);
    }
    let get = |k: &str, d: &str| m.get(k).cloned().unwrap_or_else(|| d.to_string());
    let url = get("url", "https://127.0.0.1:8443");
    let addr: SocketAddr = url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .parse()
        .map_err(|e| format!("--url {url}: {e}"))?;
    let tls = match m.get("cacert") {
        None => None,
        Some(f) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(f).map_err(|e| format!("{f}: {e}"))? {
                roots
                    .add(c.map_err(|e| format!("{f}: {e}"))?)
                    .map_err(|e| e.to_string())?;
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(TlsConnector::from(Arc::new(config)))
        }
    };
    Ok(Args {
        door: get("door", "api"),
        op: get("op", "user"),
        clients: get("clients", "1").parse().map_err(|_| "--clients")?,
        seconds: get("seconds", "5").parse().map_err(|_| "--seconds")?,
        addr,
        tls,
        socket: PathBuf::from(get("socket", "control.sock")),
        key_id: std::env::var("METERGATE_KEY_ID").unwrap_or_default(),
        secret: std::env::var("METERGATE_KEY_SECRET").unwrap_or_default(),
    })
}

/// A kept-alive HTTPS connection from `from`.
async fn connect(a: &Args, from: [u8; 4]) -> Result<SendRequest<Full<Bytes>>, String> {
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::from((from, 0)))
        .map_err(|e| e.to_string())?;
    let tcp = socket.connect(a.addr).await.map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let tls = a
        .tls
        .as_ref()
        .ok_or("--cacert is needed")?
        .connect(ServerName::from(a.addr.ip()), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One request on `sender`; the status.
async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> Result<u16, String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let mut r = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1");
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    let r = r
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(r).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(status)
}

fn basic(id: &str, secret: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

const FORM: &str = "application/x-www-form-urlencoded";

async fn token(a: &Args) -> Result<String, String> {
    let mut s = connect(a, [127, 0, 0, 1]).await?;
    s.ready().await.map_err(|e| e.to_string())?;
    let r = hyper::Request::post("/oauth/token")
        .header("host", "127.0.0.1")
        .header("authorization", basic(&a.key_id, &a.secret))
        .header("content-type", FORM)
        .body(Full::new(Bytes::from("grant_type=client_credentials")))
        .map_err(|e| e.to_string())?;
    let response = s.send_request(r).await.map_err(|e| e.to_string())?;
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    v["access_token"]
        .as_str()
        .map(str::to_string)
        .ok_or(format!("no token: {v}"))
}

/// One client's closed loop until `end`: latencies in µs, and statuses.
async fn client(
    a: Args,
    id: usize,
    bearer: String,
    end: Instant,
) -> Result<(Vec<u64>, Vec<u16>), String> {
    let mut attached = false;
    let mut lat = Vec::new();
    let mut statuses = Vec::new();
    let check = r#"{"principal": "crew", "permission": "Data View", "meter": "meter-1"}"#;
    let mut conn = if a.door == "api" {
        Some(connect(&a, [127, 0, 0, 1]).await?)
    } else {
        None
    };
    while Instant::now() < end {
        let t = Instant::now();
        let status = match (a.door.as_str(), a.op.as_str()) {
            ("socket", op) => {
                let argv: Vec<String> = match op {
                    "user" => vec!["user".into(), "show".into(), "admin".into()],
                    "change" => {
                        attached = !attached;
                        let verb = if attached { "attach" } else { "detach" };
                        vec![
                            "user".into(),
                            verb.into(),
                            format!("load{id}"),
                            "ReadOnly".into(),
                        ]
                    }
                    _ => ["check", "--principal", "crew", "--permission", "Data View"]
                        .into_iter()
                        .map(String::from)
                        .chain(["--meter".into(), "meter-1".into()])
                        .collect(),
                };
                let req = SocketRequest {
                    argv,
                    json: true,
                    files: BTreeMap::new(),
                };
                let r = call(&a.socket, &req).await?;
                if r.code == 0 { 200 } else { 500 }
            }
            (_, op) => {
                let sender = match conn.as_mut() {
                    Some(s) => s,
                    None => return Err("no connection".into()),
                };
                let auth = ("authorization", format!("Bearer {bearer}"));
                let result = match op {
                    "user" => send(sender, "GET", "/api/v1/users/admin", &[auth], "").await,
                    "change" => {
                        attached = !attached;
                        let method = if attached { "PUT" } else { "DELETE" };
                        let path = format!("/api/v1/users/load{id}/policies/ReadOnly");
                        send(sender, method, &path, &[auth], "").await
                    }
                    "check" => {
                        let json = ("content-type", "application/json".to_string());
                        send(sender, "POST", "/api/v1/check", &[auth, json], check).await
                    }
                    _ => {
                        let auth = ("authorization", basic(&a.key_id, &a.secret));
                        let form = ("content-type", FORM.to_string());
                        send(
                            sender,
                            "POST",
                            "/oauth/token",
                            &[auth, form],
                            "grant_type=client_credentials",
                        )
                        .await
                    }
                };
                match result {
                    Ok(s) => s,
                    // The gateway ends connections after 5 minutes: again.
                    Err(_) => {
                        conn = Some(connect(&a, [127, 0, 0, 1]).await?);
                        continue;
                    }
                }
            }
        };
        lat.push(t.elapsed().as_micros() as u64);
        statuses.push(status);
    }
    Ok((lat, statuses))
}

/// Wrong secrets from 127.0.0.2 as fast as answered, until `end`.
async fn attacker(a: Args, end: Instant) -> usize {
    let mut sent = 0;
    while Instant::now() < end {
        let Ok(mut s) = connect(&a, [127, 0, 0, 2]).await else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        while Instant::now() < end {
            let auth = ("authorization", basic(&a.key_id, "wrong-secret"));
            let form = ("content-type", FORM.to_string());
            if send(
                &mut s,
                "POST",
                "/oauth/token",
                &[auth, form],
                "grant_type=client_credentials",
            )
            .await
            .is_err()
            {
                break;
            }
            sent += 1;
        }
    }
    sent
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() -> Result<(), String> {
    let a = parse()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let bearer = if a.door == "api" && a.op != "token" && a.op != "flood" {
            token(&a).await?
        } else {
            String::new()
        };
        let start = Instant::now();
        let end = start + Duration::from_secs_f64(a.seconds);
        let mut lat = Vec::new();
        let mut statuses = Vec::new();
        let mut wrong = 0;
        if a.op == "flood" {
            let attackers: Vec<_> = (0..a.clients)
                .map(|_| tokio::spawn(attacker(a.clone(), end)))
                .collect();
            let mut s = connect(&a, [127, 0, 0, 1]).await?;
            while Instant::now() < end {
                let t = Instant::now();
                let auth = ("authorization", basic(&a.key_id, &a.secret));
                let form = ("content-type", FORM.to_string());
                match send(
                    &mut s,
                    "POST",
                    "/oauth/token",
                    &[auth, form],
                    "grant_type=client_credentials",
                )
                .await
                {
                    Ok(status) => {
                        lat.push(t.elapsed().as_micros() as u64);
                        statuses.push(status);
                    }
                    Err(_) => s = connect(&a, [127, 0, 0, 1]).await?,
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            for at in attackers {
                wrong += at.await.unwrap_or(0);
            }
        } else {
            let tasks: Vec<_> = (0..a.clients)
                .map(|i| tokio::spawn(client(a.clone(), i, bearer.clone(), end)))
                .collect();
            for t in tasks {
                let (l, s) = t.await.map_err(|e| e.to_string())??;
                lat.extend(l);
                statuses.extend(s);
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        lat.sort_unstable();
        let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
        for s in &statuses {
            *by_status.entry(*s).or_default() += 1;
        }
        let out = serde_json::json!({
            "door": a.door, "op": a.op, "clients": a.clients,
            "requests": lat.len(),
            "rps": if a.op == "flood" { 0.0 } else { lat.len() as f64 / elapsed },
            "p50_us": percentile(&lat, 0.5), "p99_us": percentile(&lat, 0.99),
            "max_us": lat.last().copied().unwrap_or(0),
            "statuses": by_status, "wrong_secrets_sent": wrong,
        });
        println!("{out}");
        Ok::<(), String>(())
    })
}

//! Modbus/TCP load generator for the proxy benchmarks: N clients, each on its
//! own connection, send FC 3 reads of 10 registers in a closed loop for a
//! while; prints one JSON line with requests/s and latency percentiles.
//! With --tls-ca/--tls-cert/--tls-key the connections are Modbus/TCP
//! Security (TLS with a client certificate). With --handshakes each request
//! is made on a new connection (connect, handshake, one read, close), with
//! --resume letting TLS sessions resume.
//!
//! usage: modbus_load --clients N --seconds S --target HOST:PORT --units 1-16
//!        modbus_load --clients N --seconds S --targets HOST:P1,HOST:P2,... (unit 1 each)
//!        [--tls-ca F --tls-cert F --tls-key F] [--handshakes [--resume]]
//!        [--interval MS]   (each client polls once per MS, as SCADA does,
//!                           instead of a closed loop)

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

struct Args {
    clients: usize,
    seconds: f64,
    tls: Option<Arc<ClientConfig>>,
    handshakes: bool,
    /// Poll period per client; None: a closed loop.
    interval: Option<Duration>,
    /// (address, unit) each client cycles through; client i uses entry i % len.
    targets: Vec<(String, u8)>,
}

fn parse() -> Result<Args, String> {
    let mut clients = 1;
    let mut seconds = 5.0;
    let mut target = None;
    let mut units = (1u8, 1u8);
    let mut targets = Vec::new();
    let (mut ca, mut cert, mut key) = (None, None, None);
    let (mut handshakes, mut resume) = (false, false);
    let mut interval = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--clients" => clients = val()?.parse().map_err(|e| format!("--clients: {e}"))?,
            "--seconds" => seconds = val()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--target" => target = Some(val()?),
            "--units" => {
                let v = val()?;
                let (a, b) = v.split_once('-').unwrap_or((&v, &v));
                units = (
                    a.parse().map_err(|_| "--units A-B")?,
                    b.parse().map_err(|_| "--units A-B")?,
                );
            }
            "--interval" => {
                let ms: u64 = val()?.parse().map_err(|e| format!("--interval: {e}"))?;
                interval = Some(Duration::from_millis(ms));
            }
            "--targets" => targets = val()?.split(',').map(|t| (t.to_string(), 1u8)).collect(),
            "--tls-ca" => ca = Some(val()?),
            "--tls-cert" => cert = Some(val()?),
            "--tls-key" => key = Some(val()?),
            "--handshakes" => handshakes = true,
            "--resume" => resume = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if let Some(t) = target {
        targets = (units.0..=units.1).map(|u| (t.clone(), u)).collect();
    }
    if targets.is_empty() || clients == 0 {
        return Err("give --target and --units, or --targets, and --clients ≥ 1".into());
    }
    let tls = match (ca, cert, key) {
        (None, None, None) => None,
        (Some(ca), Some(cert), Some(key)) => Some(tls_config(&ca, &cert, &key, resume)?),
        _ => return Err("--tls-ca, --tls-cert and --tls-key go together".into()),
    };
    Ok(Args {
        clients,
        seconds,
        targets,
        tls,
        handshakes,
        interval,
    })
}

fn tls_config(ca: &str, cert: &str, key: &str, resume: bool) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{ca}: {e}"))? {
        roots
            .add(c.map_err(|e| format!("{ca}: {e}"))?)
            .map_err(|e| format!("{ca}: {e}"))?;
    }
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{cert}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{cert}: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{key}: {e}"))?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| e.to_string())?;
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(Arc::new(config))
}

async fn connect(addr: &str, tls: &Option<Arc<ClientConfig>>) -> Result<Box<dyn Stream>, String> {
    let s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    match tls {
        None => Ok(Box::new(s)),
        Some(config) => {
            let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
            let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
            let t = TlsConnector::from(config.clone())
                .connect(name, s)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            Ok(Box::new(t))
        }
    }
}

/// One FC 3 read of 10 registers at 3000; checks the answer.
async fn read_once(s: &mut Box<dyn Stream>, unit: u8, tid: u16) -> Result<(), String> {
    let mut resp = [0u8; 7 + 2 + 20];
    let t = tid.to_be_bytes();
    let req = [t[0], t[1], 0, 0, 0, 6, unit, 3, 0x0b, 0xb8, 0, 10];
    s.write_all(&req).await.map_err(|e| e.to_string())?;
    s.flush().await.map_err(|e| e.to_string())?;
    s.read_exact(&mut resp)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if resp[0..2] != t || resp[7] != 3 {
        return Err(format!("unexpected answer {:?}", &resp[..9]));
    }
    Ok(())
}

async fn client(
    addr: String,
    unit: u8,
    until: Instant,
    tls: Option<Arc<ClientConfig>>,
    handshakes: bool,
    interval: Option<Duration>,
) -> Result<Vec<u32>, String> {
    let mut lat = Vec::with_capacity(100_000);
    let mut tid: u16 = 0;
    if handshakes {
        while Instant::now() < until {
            tid = tid.wrapping_add(1);
            let start = Instant::now();
            let mut s = connect(&addr, &tls).await?;
            read_once(&mut s, unit, tid).await?;
            let _ = s.shutdown().await;
            lat.push(start.elapsed().as_micros() as u32);
        }
        return Ok(lat);
    }
    let mut s = connect(&addr, &tls).await?;
    let mut next = tokio::time::Instant::now();
    while Instant::now() < until {
        tid = tid.wrapping_add(1);
        let start = Instant::now();
        read_once(&mut s, unit, tid).await?;
        lat.push(start.elapsed().as_micros() as u32);
        if let Some(every) = interval {
            next += every;
            tokio::time::sleep_until(next).await;
        }
    }
    Ok(lat)
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let out = rt.block_on(async move {
        let until = Instant::now() + Duration::from_secs_f64(args.seconds);
        let started = Instant::now();
        let tasks: Vec<_> = (0..args.clients)
            .map(|i| {
                let (addr, unit) = args.targets[i % args.targets.len()].clone();
                tokio::spawn(client(
                    addr,
                    unit,
                    until,
                    args.tls.clone(),
                    args.handshakes,
                    args.interval,
                ))
            })
            .collect();
        let mut all = Vec::new();
        let mut errors = Vec::new();
        for t in tasks {
            match t.await {
                Ok(Ok(l)) => all.extend(l),
                Ok(Err(e)) => errors.push(e),
                Err(e) => errors.push(e.to_string()),
            }
        }
        (all, errors, started.elapsed())
    });
    let (mut lat, errors, elapsed) = out;
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{{\"requests\":{},\"seconds\":{:.3},\"rps\":{:.1},\"p50_us\":{},\"p99_us\":{},\"errors\":{}}}",
        lat.len(),
        elapsed.as_secs_f64(),
        lat.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        errors.len()
    );
    if let Some(e) = errors.first() {
        eprintln!("first error: {e}");
    }
}

//! `metergate --api https://HOST:PORT …`: the command line as a client of
//! a remote gateway's HTTPS API. The access key comes from
//! METERGATE_KEY_ID and METERGATE_KEY_SECRET; the bearer token it gets is
//! cached (0600, in the user's runtime directory) until shortly before it
//! expires. Commands go to `POST /api/v1/commands`, so the words, the
//! output and the exit code are those of the control socket.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::http::{Method, Request, StatusCode, Uri, header};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use crate::commands::CliAnswer;
use crate::store::secrets::Secret;

/// Where a system keeps its CA bundle (Debian), when no --cacert is given.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// A cached token is used only while it has at least this long to live.
const TOKEN_MARGIN_SECS: i64 = 60;
/// An answer (but a stream's) larger than this is refused.
const MAX_ANSWER: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("--api {0}: give an https:// URL with a host (and port), e.g. https://gw1:8443")]
    Url(String),
    #[error("{path}: {message}")]
    Trust { path: PathBuf, message: String },
    #[error(
        "{0} is not set: export the access key's id and secret (METERGATE_KEY_ID, METERGATE_KEY_SECRET)"
    )]
    Credentials(&'static str),
    #[error("cannot reach {address}: {message}")]
    Connect { address: String, message: String },
    #[error("{0}")]
    Http(String),
    /// The gateway refused the key or the call; `status` tells which.
    #[error("{detail}")]
    Refused { status: u16, detail: String },
}

/// The body of `POST /api/v1/commands`.
#[derive(Serialize)]
struct CommandLine<'a> {
    argv: &'a [String],
    json: bool,
    files: &'a BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Frame {
    #[serde(default)]
    code: u8,
    #[serde(default)]
    stdout: String,
    #[serde(default)]
    stderr: String,
    #[serde(default)]
    more: bool,
}

#[derive(Serialize, Deserialize)]
struct CachedToken {
    token: String,
    /// Unix seconds.
    expires_at: i64,
}

/// A remote gateway and the key to reach it with.
pub struct Remote {
    url: String,
    host: String,
    port: u16,
    name: ServerName<'static>,
    tls: TlsConnector,
    key_id: String,
    secret: Secret,
    cache: Option<PathBuf>,
}

impl Remote {
    /// From `--api`, `--cacert` and the environment.
    pub fn new(url: &str, cacert: Option<&Path>) -> Result<Remote, RemoteError> {
        let uri: Uri = url.parse().map_err(|_| RemoteError::Url(url.into()))?;
        if uri.scheme_str() != Some("https") || uri.path().len() > 1 {
            return Err(RemoteError::Url(url.into()));
        }
        let host = uri
            .host()
            .ok_or_else(|| RemoteError::Url(url.into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let name = ServerName::try_from(host.clone()).map_err(|_| RemoteError::Url(url.into()))?;
        let key_id = std::env::var("METERGATE_KEY_ID")
            .map_err(|_| RemoteError::Credentials("METERGATE_KEY_ID"))?;
        let secret = Secret::new(
            std::env::var("METERGATE_KEY_SECRET")
                .map_err(|_| RemoteError::Credentials("METERGATE_KEY_SECRET"))?,
        );
        let bundle = cacert.unwrap_or(Path::new(SYSTEM_BUNDLE));
        let trust = |message: String| RemoteError::Trust {
            path: bundle.to_path_buf(),
            message,
        };
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(bundle)
            .map_err(|e| trust(format!("cannot read CA certificates: {e} (give --cacert)")))?
        {
            let cert = cert.map_err(|e| trust(format!("not a PEM certificate: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| trust(format!("not usable as a trust anchor: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| RemoteError::Http(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let base = url.trim_end_matches('/').to_string();
        let cache = cache_dir().map(|d| {
            let digest = ring::digest::digest(
                &ring::digest::SHA256,
                format!("{base}\n{key_id}").as_bytes(),
            );
            d.join(format!("{}.token", &hex::encode(digest.as_ref())[..32]))
        });
        Ok(Remote {
            url: base,
            host,
            port,
            name,
            tls: TlsConnector::from(Arc::new(config)),
            key_id,
            secret,
            cache,
        })
    }

    /// One request on a new connection; the answer's status, headers and body.
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(header::HeaderName, String)],
        body: Vec<u8>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, RemoteError> {
        let address = format!("{}:{}", self.host, self.port);
        let connect = |e: std::io::Error| RemoteError::Connect {
            address: address.clone(),
            message: e.to_string(),
        };
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(connect)?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .tls
            .connect(self.name.clone(), tcp)
            .await
            .map_err(connect)?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| RemoteError::Http(format!("{address}: {e}")))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let authority = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            address.clone()
        };
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, authority);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| RemoteError::Http(e.to_string()))?;
        sender
            .send_request(request)
            .await
            .map_err(|e| RemoteError::Http(format!("{address}: {e}")))
    }

    /// A token: the cached one while it lives, else a new one.
    async fn token(&self, fresh: bool) -> Result<String, RemoteError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if !fresh
            && let Some(path) = &self.cache
            && let Some(text) = read_own(path)
            && let Ok(cached) = serde_json::from_str::<CachedToken>(&text)
            && cached.expires_at - TOKEN_MARGIN_SECS > now
        {
            return Ok(cached.token);
        }
        let form = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        use base64::Engine;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            form(&self.key_id),
            form(self.secret.expose())
        ));
        let response = self
            .send(
                Method::POST,
                "/oauth/token",
                &[
                    (header::AUTHORIZATION, format!("Basic {basic}")),
                    (
                        header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded".into(),
                    ),
                ],
                b"grant_type=client_credentials".to_vec(),
            )
            .await?;
        let status = response.status();
        let body = collect(response.into_body()).await?;
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if status != StatusCode::OK {
            let why = answer["error_description"]
                .as_str()
                .or(answer["error"].as_str())
                .unwrap_or("no reason given");
            return Err(RemoteError::Refused {
                status: status.as_u16(),
                detail: format!(
                    "{}: the access key {} got no token ({status}): {why}",
                    self.url, self.key_id
                ),
            });
        }
        let (Some(token), Some(expires_in)) = (
            answer["access_token"].as_str(),
            answer["expires_in"].as_i64(),
        ) else {
            return Err(RemoteError::Http(format!(
                "{}: the token answer is not RFC 6749's",
                self.url
            )));
        };
        if let Some(path) = &self.cache {
            // Best effort: without a cache each command gets a new token.
            let _ = store_token(
                path,
                &CachedToken {
                    token: token.to_string(),
                    expires_at: now + expires_in,
                },
            );
        }
        Ok(token.to_string())
    }

    /// Runs one admin command remotely: frames of a streamed answer but
    /// the last go to `each`; returns the last.
    pub async fn call_streaming(
        &self,
        argv: &[String],
        json: bool,
        files: &BTreeMap<String, String>,
        mut each: impl FnMut(&str),
    ) -> Result<CliAnswer, RemoteError> {
        let body = serde_json::to_vec(&CommandLine { argv, json, files })
            .map_err(|e| RemoteError::Http(e.to_string()))?;
        let mut fresh = false;
        let response = loop {
            let token = self.token(fresh).await?;
            let response = self
                .send(
                    Method::POST,
                    "/api/v1/commands",
                    &[
                        (header::AUTHORIZATION, format!("Bearer {token}")),
                        (header::CONTENT_TYPE, "application/json".into()),
                    ],
                    body.clone(),
                )
                .await?;
            // A cached token that died (key rotated, gateway restarted):
            // one more try with a new one.
            if response.status() == StatusCode::UNAUTHORIZED && !fresh {
                fresh = true;
                continue;
            }
            break response;
        };
        let status = response.status();
        let streamed = response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/x-ndjson"));
        if status != StatusCode::OK {
            let body = collect(response.into_body()).await?;
            let problem: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let detail = problem["detail"].as_str().unwrap_or("no reason given");
            return Err(RemoteError::Refused {
                status: status.as_u16(),
                detail: format!("{}: {detail} ({status})", self.url),
            });
        }
        if !streamed {
            let body = collect(response.into_body()).await?;
            return serde_json::from_slice(&body).map_err(|e| {
                RemoteError::Http(format!("{}: not a command answer: {e}", self.url))
            });
        }
        let mut body = response.into_body();
        let mut pending: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| RemoteError::Http(format!("{}: {e}", self.url)))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let f: Frame = serde_json::from_slice(&line)
                    .map_err(|e| RemoteError::Http(format!("{}: a bad frame: {e}", self.url)))?;
                if f.more {
                    each(&f.stdout);
                } else {
                    return Ok(CliAnswer {
                        code: f.code,
                        stdout: f.stdout,
                        stderr: f.stderr,
                    });
                }
            }
            if pending.len() > MAX_ANSWER {
                return Err(RemoteError::Http(format!(
                    "{}: a frame too large",
                    self.url
                )));
            }
        }
        Err(RemoteError::Http(format!(
            "{}: the answer ended before its last frame",
            self.url
        )))
    }
}

async fn collect(body: hyper::body::Incoming) -> Result<Vec<u8>, RemoteError> {
    let limited = http_body_util::Limited::new(body, MAX_ANSWER);
    limited
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .map_err(|e| RemoteError::Http(format!("reading the answer: {e}")))
}

/// `$XDG_RUNTIME_DIR/metergate` (a tmpfs of the user's own), else
/// `~/.cache/metergate`.
fn cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(|d| PathBuf::from(d).join("metergate"))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/metergate")))
}

/// Whether `meta` is ours alone: owned by us, nothing for group or others.
fn ours_alone(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    meta.uid() == nix::unistd::geteuid().as_raw() && meta.mode() & 0o077 == 0
}

/// The cached token's text, if the file is a plain file of ours alone
/// (a symlink or a file someone else could have written is ignored).
fn read_own(path: &Path) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        // Not through a link, and never waiting on a planted FIFO.
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() || !ours_alone(&meta) {
        return None;
    }
    let mut text = String::new();
    f.take(64 * 1024).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Writes the token 0600 in a 0700 directory of ours alone, whole or not
/// at all: a directory another user could write into (a `su` that kept
/// their XDG_RUNTIME_DIR) is not used, and the file is made new, never
/// through a link.
fn store_token(path: &Path, token: &CachedToken) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() || !ours_alone(&meta) {
        return Err(std::io::Error::other(format!(
            "{} is not a directory of ours alone",
            dir.display()
        )));
    }
    let mut salt = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
        .map_err(|_| std::io::Error::other("no randomness"))?;
    let temporary = dir.join(format!(".{}.tmp", hex::encode(salt)));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&temporary)?;
    let written = f
        .write_all(serde_json::to_string(token).unwrap_or_default().as_bytes())
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_is_written_new_and_never_through_a_planted_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("metergate");
        let path = cache.join("abc.token");
        let token = CachedToken {
            token: "mgt_x".into(),
            expires_at: 1,
        };
        store_token(&path, &token).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(read_own(&path).unwrap().contains("mgt_x"));
        // A link planted in the token's place is not read.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "{\"token\":\"planted\",\"expires_at\":9999999999}").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        assert!(read_own(&path).is_none());
        // Written again, the link is replaced and the victim untouched.
        store_token(&path, &token).unwrap();
        assert!(
            std::fs::read_to_string(&victim)
                .unwrap()
                .contains("planted")
        );
        assert!(
            !std::fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        // A directory others may write into is not used.
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(store_token(&path, &token).is_err());
    }
}

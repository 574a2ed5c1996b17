//! The SFTP dispatch loop: packets in, answers out, reads and writes kept
//! in flight, the channel ended when the client leaves or the session ends.

use bytes::Bytes;
use russh_sftp::protocol::{Packet, Status, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{MAX_PACKET, Open, SftpSession};

/// Reads and writes kept in flight at once per channel.
const IN_FLIGHT: usize = 64;

/// Runs the SFTP protocol on `stream` until the client ends it. Reads and
/// writes on open handles run concurrently (up to [`IN_FLIGHT`]) and are
/// answered as they finish (SFTP matches answers by id); any other request
/// first waits for them, so a close sees every write before it.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    mut session: SftpSession,
    mut ended: tokio::sync::watch::Receiver<Option<String>>,
) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Packet>(IN_FLIGHT * 2);
    let writing = tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            let Ok(out) = Bytes::try_from(p) else { break };
            if writer.write_all(&out).await.is_err() {
                break;
            }
            if rx.is_empty() && writer.flush().await.is_err() {
                break;
            }
        }
        let _ = writer.flush().await;
    });
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        let len = tokio::select! {
            r = reader.read_u32() => match r {
                Ok(len) => len,
                Err(_) => break,
            },
            // Ended (killed, or the access it relied on was withdrawn).
            _ = ended.changed() => break,
        };
        if len == 0 || len > MAX_PACKET {
            tracing::debug!(len, "sftp packet length refused");
            break;
        }
        let mut buf = vec![0u8; len as usize];
        if reader.read_exact(&mut buf).await.is_err() {
            break;
        }
        let mut bytes = Bytes::from(buf);
        let Ok(p) = Packet::try_from(&mut bytes) else {
            if tx
                .send(Packet::error(0, StatusCode::BadMessage))
                .await
                .is_err()
            {
                break;
            }
            continue;
        };
        if let Some(job) = session.io(&p) {
            while in_flight.len() >= IN_FLIGHT {
                in_flight.join_next().await;
            }
            let tx = tx.clone();
            in_flight.spawn(async move {
                let _ = tx.send(job.await).await;
            });
            continue;
        }
        while in_flight.join_next().await.is_some() {}
        let id = p.get_request_id();
        let response = match session.request(p).await {
            Ok(reply) => reply,
            Err((code, message)) => Packet::Status(Status {
                id,
                status_code: code,
                error_message: message,
                language_tag: "en-US".into(),
            }),
        };
        if tx.send(response).await.is_err() {
            break;
        }
    }
    while in_flight.join_next().await.is_some() {}
    drop(tx);
    let _ = writing.await;
    // Uploads never closed are not kept.
    for (_, open) in session.handles.drain() {
        match open {
            Open::Write(u) => super::handles::discard(u).await,
            Open::Read { file, .. } => file.close().await,
            Open::Dir { .. } => {}
        }
    }
}

//! The control socket's protocol: one request and one response per
//! connection, each a length-prefixed JSON frame (4-byte big-endian length,
//! at most [`MAX_FRAME`] bytes), so no input can make the daemon allocate
//! without bound or wait forever.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame either side accepts (a policy file or key fits easily).
pub const MAX_FRAME: usize = 1 << 20;

/// What the CLI sends: the command's words, and the contents of the files it
/// names (`--file F`, `@FILE`), read by the caller with the caller's rights.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub argv: Vec<String>,
    #[serde(default)]
    pub json: bool,
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

/// What the daemon answers: the exit code and what to print.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct Response {
    pub code: u8,
    pub stdout: String,
    pub stderr: String,
    /// More frames follow (a streamed answer: `audit export`, `audit tail
    /// -f`); the last frame has it false and carries the exit code.
    #[serde(default, skip_serializing_if = "is_false")]
    pub more: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes is larger than the {MAX_FRAME} allowed")]
    TooLarge(usize),
    #[error("frame is not a valid message: {0}")]
    Malformed(String),
}

pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> Result<(), FrameError> {
    let body = serde_json::to_vec(msg).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    w.write_all(&(body.len() as u32).to_be_bytes()).await?;
    w.write_all(&body).await?;
    w.flush().await?;
    Ok(())
}

pub async fn read_frame<R: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(
    r: &mut R,
) -> Result<T, FrameError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    serde_json::from_slice(&body).map_err(|e| FrameError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_or_garbage_frames_are_refused() {
        let req = Request {
            argv: vec!["user".into(), "list".into()],
            json: true,
            files: BTreeMap::new(),
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &req).await.unwrap();
        let back: Request = read_frame(&mut buf.as_slice()).await.unwrap();
        assert_eq!(back, req);
        let huge = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(matches!(
            read_frame::<_, Request>(&mut huge.as_slice()).await,
            Err(FrameError::TooLarge(_))
        ));
        let mut garbage = 5u32.to_be_bytes().to_vec();
        garbage.extend_from_slice(b"\xff\xfe{{{");
        assert!(matches!(
            read_frame::<_, Request>(&mut garbage.as_slice()).await,
            Err(FrameError::Malformed(_))
        ));
        let short = 10u32.to_be_bytes();
        assert!(matches!(
            read_frame::<_, Request>(&mut short.as_slice()).await,
            Err(FrameError::Io(_))
        ));
    }
}

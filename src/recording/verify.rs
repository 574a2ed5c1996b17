//! A recording checked against what the audit log says of it: each chunk's
//! SHA-256 chains to the one before, and the log's `session.recording`
//! events name every durable chunk's place, length and chain hash.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use ring::digest::{Context, SHA256};

use crate::store::log::SecurityEvent;

/// The chain hash before the first chunk.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The chain hash after a chunk: SHA-256 over the previous hash (raw) and
/// the chunk's bytes.
pub fn chain(prev: &str, chunk: &[u8]) -> String {
    let mut ctx = Context::new(&SHA256);
    match hex::decode(prev) {
        Ok(raw) => ctx.update(&raw),
        Err(_) => ctx.update(prev.as_bytes()),
    }
    ctx.update(chunk);
    hex::encode(ctx.finish().as_ref())
}

/// What one `session.recording` event vouches for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub seq: u64,
    pub chunk: u64,
    pub offset: u64,
    pub length: u64,
    pub hash: String,
    /// The chain hash before this chunk (lets a check start at a chunk
    /// whose predecessors' events the log dropped).
    pub prev: Option<String>,
    /// The recording's last chunk: it ended cleanly.
    pub last: bool,
}

impl Claim {
    /// The claim of a `session.recording` event, with its recording's id.
    pub fn of(ev: &SecurityEvent) -> Option<(String, Claim)> {
        if ev.code != "session.recording" {
            return None;
        }
        let d = &ev.detail;
        let num = |k: &str| d.get(k).and_then(|v| v.parse::<u64>().ok());
        Some((
            d.get("recording")?.clone(),
            Claim {
                seq: ev.seq,
                chunk: num("chunk")?,
                offset: num("offset")?,
                length: num("length")?,
                hash: d.get("hash")?.clone(),
                prev: d.get("prev").cloned(),
                last: d.get("last").is_some_and(|v| v == "true"),
            },
        ))
    }
}

/// What checking a recording found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every chunk the log names is there, unchanged.
    Intact {
        chunks: u64,
        bytes: u64,
        /// The first chunk checked: the log dropped the events of those
        /// before it (drop-oldest), so they are unvouched.
        from_chunk: u64,
        /// The log holds its last chunk (false: the gateway stopped, or
        /// the recording still runs).
        complete: bool,
        /// Bytes after the last vouched chunk: written, never vouched for
        /// (a crash between the write and its event, or appended since).
        unvouched: u64,
    },
    /// The first chunk that differs or is missing, and how.
    Broken { chunk: u64, why: String },
}

impl Verdict {
    pub fn ok(&self) -> bool {
        matches!(self, Verdict::Intact { .. })
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        match self {
            Verdict::Intact {
                chunks,
                bytes,
                from_chunk,
                complete,
                unvouched,
            } => {
                let mut s = format!("{chunks} chunks ({bytes} bytes) verify");
                if *from_chunk > 0 {
                    s += &format!(
                        "; from chunk {from_chunk} on: the log no longer holds the events of the chunks before it (dropped as the oldest)"
                    );
                }
                if !complete {
                    s += "; it has no last chunk: the gateway stopped during the session, or it still runs";
                }
                if *unvouched > 0 {
                    s += &format!(
                        "; {unvouched} bytes after chunk {} are not vouched for by the log (written after the last durable chunk)",
                        (from_chunk + chunks).saturating_sub(1)
                    );
                }
                s
            }
            Verdict::Broken { chunk, why } => format!("chunk {chunk} {why}"),
        }
    }
}

/// Checks the file at `path` against `claims` (any order).
pub fn check(path: &Path, claims: &[Claim]) -> Verdict {
    let mut by_chunk: BTreeMap<u64, &Claim> = BTreeMap::new();
    for c in claims {
        by_chunk.entry(c.chunk).or_insert(c);
    }
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Verdict::Broken {
                chunk: 0,
                why: "is missing: the recording's file is gone".into(),
            };
        }
        Err(e) => {
            return Verdict::Broken {
                chunk: 0,
                why: format!("cannot be read: {e}"),
            };
        }
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    // The walk starts at chunk 0, or where the log's oldest surviving
    // chunk event says the chain stood (its predecessors were dropped).
    let (from_chunk, mut prev, mut offset) = match by_chunk.values().next() {
        Some(c) if c.chunk > 0 => match &c.prev {
            Some(p) => (c.chunk, p.clone(), c.offset),
            None => {
                return Verdict::Broken {
                    chunk: 0,
                    why: "has no event in the log, though later chunks do".into(),
                };
            }
        },
        _ => (0, GENESIS.to_string(), 0u64),
    };
    let mut complete = false;
    for (expected, (&index, claim)) in by_chunk.iter().enumerate() {
        let expected = from_chunk + expected as u64;
        if complete {
            return Verdict::Broken {
                chunk: index,
                why: "has an event after the recording's last chunk".into(),
            };
        }
        if index != expected {
            return Verdict::Broken {
                chunk: expected,
                why: "has no event in the log, though later chunks do".into(),
            };
        }
        if claim.offset != offset {
            return Verdict::Broken {
                chunk: index,
                why: format!(
                    "starts at byte {} by its event, where chunk {} ended at {offset}",
                    claim.offset,
                    index.saturating_sub(1)
                ),
            };
        }
        let Some(end) = offset.checked_add(claim.length) else {
            return Verdict::Broken {
                chunk: index,
                why: "has a length its event cannot mean".into(),
            };
        };
        if end > size {
            return Verdict::Broken {
                chunk: index,
                why: format!(
                    "is missing: the file ends at byte {size}, the chunk runs from {offset} to {end}"
                ),
            };
        }
        let mut bytes = vec![0u8; claim.length as usize];
        if let Err(e) = file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut bytes))
        {
            return Verdict::Broken {
                chunk: index,
                why: format!("cannot be read: {e}"),
            };
        }
        let hash = chain(&prev, &bytes);
        if hash != claim.hash {
            return Verdict::Broken {
                chunk: index,
                why: format!(
                    "differs from what the log vouches for (bytes {offset}..{end}; event seq {})",
                    claim.seq
                ),
            };
        }
        prev = hash;
        offset = end;
        complete = claim.last;
    }
    let unvouched = size.saturating_sub(offset);
    if complete && unvouched > 0 {
        return Verdict::Broken {
            chunk: from_chunk + by_chunk.len() as u64,
            why: format!(
                "was added: {unvouched} bytes follow the recording's last chunk, which the log says ended it"
            ),
        };
    }
    Verdict::Intact {
        chunks: by_chunk.len() as u64,
        bytes: offset,
        from_chunk,
        complete,
        unvouched,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims_for(chunks: &[&[u8]]) -> Vec<Claim> {
        let mut prev = GENESIS.to_string();
        let mut offset = 0;
        chunks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                prev = chain(&prev, c);
                let claim = Claim {
                    seq: i as u64 + 1,
                    chunk: i as u64,
                    offset,
                    length: c.len() as u64,
                    hash: prev.clone(),
                    prev: None,
                    last: i + 1 == chunks.len(),
                };
                offset += c.len() as u64;
                claim
            })
            .collect()
    }

    #[test]
    fn tampering_names_the_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.cast");
        let chunks: [&[u8]; 3] = [
            b"header\n",
            b"[1.0, \"o\", \"a\"]\n",
            b"[2.0, \"o\", \"b\"]\n",
        ];
        let claims = claims_for(&chunks);
        std::fs::write(&path, chunks.concat()).unwrap();
        assert!(check(&path, &claims).ok());
        // A flipped byte in the second chunk.
        let mut bytes = chunks.concat();
        bytes[10] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            check(&path, &claims),
            Verdict::Broken { chunk: 1, .. }
        ));
        // The last chunk cut short.
        std::fs::write(&path, &chunks.concat()[..30]).unwrap();
        assert!(matches!(
            check(&path, &claims),
            Verdict::Broken { chunk: 2, .. }
        ));
        // A chunk deleted.
        std::fs::write(&path, [chunks[0], chunks[2]].concat()).unwrap();
        assert!(matches!(
            check(&path, &claims),
            Verdict::Broken { chunk: 1, .. }
        ));
        // An event missing from the middle.
        std::fs::write(&path, chunks.concat()).unwrap();
        let gap = vec![claims[0].clone(), claims[2].clone()];
        assert!(matches!(
            check(&path, &gap),
            Verdict::Broken { chunk: 1, .. }
        ));
        // Bytes added after the last chunk.
        std::fs::write(
            &path,
            [chunks.concat(), b"[3.0, \"o\", \"x\"]\n".to_vec()].concat(),
        )
        .unwrap();
        assert!(matches!(
            check(&path, &claims),
            Verdict::Broken { chunk: 3, .. }
        ));
        std::fs::write(&path, chunks.concat()).unwrap();
        // Bytes never vouched for after the last chunk the log knows.
        let first_two = &claims[..2];
        match check(&path, first_two) {
            Verdict::Intact {
                chunks: 2,
                complete: false,
                unvouched,
                ..
            } => assert_eq!(unvouched, chunks[2].len() as u64),
            other => panic!("{other:?}"),
        }
    }
}

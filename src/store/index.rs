//! Secondary indexes of the security log (by principal, meter, code and
//! door) and the query that uses them: the newest events matching filters in
//! a time range, without walking the whole log.

use sled::Tree;

use super::log::{Outcome, SecurityEvent};

/// The index tree's own high-water mark: the last seq indexed.
const HIGH: &[u8] = b"\xff\xffhigh";

/// What an event is indexed by; also read straight from a stored event
/// (the other fields are skipped).
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct IndexKeys {
    pub principal: Option<String>,
    pub meter: Option<String>,
    pub code: String,
    pub door: Option<String>,
}

impl IndexKeys {
    fn prefixes(&self) -> Vec<Vec<u8>> {
        let mut out = vec![prefix(b'c', &self.code)];
        if let Some(p) = &self.principal {
            out.push(prefix(b'p', p));
        }
        if let Some(m) = &self.meter {
            out.push(prefix(b'm', m));
        }
        if let Some(d) = &self.door {
            out.push(prefix(b'd', d));
        }
        out
    }
}

/// `KIND value 0x00`: values are names and codes (no NUL in them).
fn prefix(kind: u8, value: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(value.len() + 10);
    k.push(kind);
    k.extend_from_slice(value.as_bytes());
    k.push(0);
    k
}

fn entry(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Adds the index entries of one event to a batch.
pub fn add(batch: &mut sled::Batch, keys: &IndexKeys, seq: u64) {
    for p in keys.prefixes() {
        batch.insert(entry(&p, seq), &[]);
    }
}

/// Removes the index entries of one event (the log dropped it).
pub fn remove(batch: &mut sled::Batch, keys: &IndexKeys, seq: u64) {
    for p in keys.prefixes() {
        batch.remove(entry(&p, seq));
    }
}

/// Records that everything up to `seq` is indexed.
pub fn set_high(batch: &mut sled::Batch, seq: u64) {
    batch.insert(HIGH, &seq.to_be_bytes());
}

pub fn high(index: &Tree) -> Result<u64, sled::Error> {
    Ok(index
        .get(HIGH)?
        .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0))
}

/// Indexes the events not indexed yet (the indexer follows the log; after
/// a crash it resumes from its high-water mark), in bounded batches.
pub fn catch_up(log: &Tree, index: &Tree) -> Result<u64, sled::Error> {
    catch_up_unless(log, index, || false)
}

/// Like [`catch_up`], stopping between batches when `busy` says so.
pub fn catch_up_unless(
    log: &Tree,
    index: &Tree,
    busy: impl Fn() -> bool,
) -> Result<u64, sled::Error> {
    const CHUNK: usize = 2_000;
    let mut count = 0;
    loop {
        let from = high(index)? + 1;
        let mut batch = sled::Batch::default();
        let mut last = None;
        let mut n = 0;
        for item in log.range(from.to_be_bytes()..).take(CHUNK) {
            let (k, v) = item?;
            let Ok(seq) = <[u8; 8]>::try_from(k.as_ref()).map(u64::from_be_bytes) else {
                continue;
            };
            if let Ok(keys) = serde_json::from_slice::<IndexKeys>(&v) {
                add(&mut batch, &keys, seq);
                count += 1;
            }
            last = Some(seq);
            n += 1;
        }
        let Some(seq) = last else {
            return Ok(count);
        };
        set_high(&mut batch, seq);
        index.apply_batch(batch)?;
        if n < CHUNK || busy() {
            return Ok(count);
        }
    }
}

/// What `audit query` asks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// UTC µs, inclusive.
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// As events write it (`user:alice`).
    pub principal: Option<String>,
    pub meter: Option<String>,
    pub code: Option<String>,
    pub door: Option<String>,
    pub outcome: Option<Outcome>,
    /// The newest this many.
    pub limit: usize,
    /// Only events before this seq (the next page of older ones).
    pub before: Option<u64>,
}

impl Query {
    pub fn matches(&self, e: &SecurityEvent) -> bool {
        self.since.is_none_or(|t| e.time >= t)
            && self.until.is_none_or(|t| e.time <= t)
            && (self.principal.is_none() || e.principal == self.principal)
            && (self.meter.is_none() || e.meter == self.meter)
            && (self.code.is_none() || Some(&e.code) == self.code.as_ref())
            && (self.door.is_none() || e.door == self.door)
            && self.outcome.is_none_or(|o| e.outcome == o)
    }
}

fn event_at(log: &Tree, seq: u64) -> Result<Option<SecurityEvent>, sled::Error> {
    Ok(log
        .get(seq.to_be_bytes())?
        .and_then(|v| serde_json::from_slice(&v).ok()))
}

/// The first seq whose event is at or after `t` (times never go back along
/// the chain), by binary search over seqs.
pub fn first_seq_at(log: &Tree, t: i64, lo: u64, hi: u64) -> Result<u64, sled::Error> {
    let (mut lo, mut hi) = (lo, hi + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        // A gap (a dropped event) reads as "before", which only widens the
        // range; the filters still apply to every event returned.
        let before = match log.range(mid.to_be_bytes()..).next() {
            Some(item) => {
                let (_, v) = item?;
                serde_json::from_slice::<SecurityEvent>(&v).is_ok_and(|e| e.time < t)
            }
            None => false,
        };
        if before {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

fn seq_of(key: &[u8]) -> Option<u64> {
    let tail = key.get(key.len().checked_sub(8)?..)?;
    <[u8; 8]>::try_from(tail).ok().map(u64::from_be_bytes)
}

/// The newest `limit` events matching the query, oldest first. Uses the
/// most selective index the query names (principal, meter, code, door),
/// walking it backwards from the end of the time range.
pub fn run(log: &Tree, index: &Tree, q: &Query) -> Result<Vec<SecurityEvent>, sled::Error> {
    let (Some((first, _)), Some((last, _))) = (log.first()?, log.last()?) else {
        return Ok(Vec::new());
    };
    let (first, last) = (seq_of(&first).unwrap_or(0), seq_of(&last).unwrap_or(0));
    let lo = match q.since {
        Some(t) => first_seq_at(log, t, first, last)?,
        None => first,
    };
    let hi = match q.until {
        Some(t) => first_seq_at(log, t.saturating_add(1), first, last)?.saturating_sub(1),
        None => last,
    };
    let hi = match q.before {
        Some(0) => return Ok(Vec::new()),
        Some(b) => hi.min(b - 1),
        None => hi,
    };
    let mut out = Vec::new();
    if lo > hi || q.limit == 0 {
        return Ok(out);
    }
    let by = [
        (b'p', &q.principal),
        (b'm', &q.meter),
        (b'c', &q.code),
        (b'd', &q.door),
    ]
    .into_iter()
    .find_map(|(kind, v)| v.as_ref().map(|v| prefix(kind, v)));
    match by {
        Some(p) => {
            for item in index.range(entry(&p, lo)..=entry(&p, hi)).rev() {
                let (k, _) = item?;
                let Some(seq) = seq_of(&k) else { continue };
                if let Some(e) = event_at(log, seq)?
                    && q.matches(&e)
                {
                    out.push(e);
                    if out.len() >= q.limit {
                        break;
                    }
                }
            }
        }
        None => {
            for item in log.range(lo.to_be_bytes()..=hi.to_be_bytes()).rev() {
                let (_, v) = item?;
                if let Ok(e) = serde_json::from_slice::<SecurityEvent>(&v)
                    && q.matches(&e)
                {
                    out.push(e);
                    if out.len() >= q.limit {
                        break;
                    }
                }
            }
        }
    }
    out.reverse();
    Ok(out)
}

//! The guard's small shared state in PostgreSQL: one row per key, changed
//! under its row lock in one transaction, so gateways racing get one answer.

use std::time::Duration;

use super::{Postgres, unreachable};
use crate::store::StoreError;

/// A guard-state round trip longer than this is a server that cannot be
/// reached: the caller falls back (or refuses) rather than keep a login or
/// a Modbus request waiting.
const STATE_ROUND_TRIP: Duration = Duration::from_secs(2);

impl Postgres {
    /// Fails at once while the follower knows the server is away, so no
    /// request waits for a timeout it is sure to reach.
    fn state_reachable(&self) -> Result<(), StoreError> {
        let h = self.health();
        if !h.reachable && h.since != 0 {
            return Err(unreachable(
                &self.server,
                h.error.as_deref().unwrap_or("cannot be reached"),
            ));
        }
        Ok(())
    }

    /// The value under `key`, if any.
    pub fn state_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.state_reachable()?;
        let pool = self.pool.clone();
        let server = self.server.clone();
        let key = key.to_string();
        self.run_within(STATE_ROUND_TRIP, async move {
            let down = |e: &dyn std::fmt::Display| unreachable(&server, e);
            let client = pool.get().await.map_err(|e| down(&e))?;
            let row = client
                .query_opt(
                    "SELECT value FROM metergate_guard_state WHERE key = $1",
                    &[&key],
                )
                .await
                .map_err(|e| down(&e))?;
            Ok(row.and_then(|r| r.get::<_, Option<Vec<u8>>>(0)))
        })
    }

    /// Changes the value under `key` in one transaction holding its row
    /// lock: `change` sees the current value and returns the new one (None:
    /// no value) and an answer for the caller.
    pub fn state_update<R: Send + 'static>(
        &self,
        key: &str,
        change: impl FnOnce(Option<&[u8]>) -> (Option<Vec<u8>>, R) + Send + 'static,
    ) -> Result<R, StoreError> {
        self.state_update_timed(key, move |current, _| change(current))
    }

    /// As [`Postgres::state_update`], `change` also given the server's
    /// clock (µs): state every gateway compares times in (the Peak Demand
    /// interval) is kept in one clock, whatever each gateway's says.
    pub fn state_update_timed<R: Send + 'static>(
        &self,
        key: &str,
        change: impl FnOnce(Option<&[u8]>, i64) -> (Option<Vec<u8>>, R) + Send + 'static,
    ) -> Result<R, StoreError> {
        self.state_reachable()?;
        let pool = self.pool.clone();
        let server = self.server.clone();
        let key = key.to_string();
        self.run_within(STATE_ROUND_TRIP, async move {
            let down = |e: &dyn std::fmt::Display| unreachable(&server, e);
            let mut client = pool.get().await.map_err(|e| down(&e))?;
            let tx = client.transaction().await.map_err(|e| down(&e))?;
            // The row exists before it is locked, so two first changes of
            // one key also go one after the other.
            tx.execute(
                "INSERT INTO metergate_guard_state (key, value) VALUES ($1, NULL) \
                 ON CONFLICT (key) DO NOTHING",
                &[&key],
            )
            .await
            .map_err(|e| down(&e))?;
            let row = tx
                .query_one(
                    "SELECT value, (extract(epoch from clock_timestamp()) * 1000000)::bigint \
                     FROM metergate_guard_state WHERE key = $1 FOR UPDATE",
                    &[&key],
                )
                .await
                .map_err(|e| down(&e))?;
            let current = row.get::<_, Option<Vec<u8>>>(0);
            let (new, answer) = change(current.as_deref(), row.get::<_, i64>(1));
            if new != current {
                tx.execute(
                    "UPDATE metergate_guard_state SET value = $2, changed = now() WHERE key = $1",
                    &[&key, &new],
                )
                .await
                .map_err(|e| down(&e))?;
            }
            tx.commit().await.map_err(|e| down(&e))?;
            Ok(answer)
        })
    }

    /// Forgets the value under `key`; whether there was one.
    pub fn state_remove(&self, key: &str) -> Result<bool, StoreError> {
        self.state_update(key, |current| (None, current.is_some()))
    }
}

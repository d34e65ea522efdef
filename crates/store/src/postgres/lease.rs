//! Per-conversation leases with fencing tokens.
//!
//! A lease row names its owner, an expiry and a token. Taking a lease that is free, expired or
//! already ours increments the token; the holder renews it with heartbeats and releases it when
//! done. The token never decreases (a release keeps the row), so a write carrying a token older
//! than the row's comes from a worker that lost the conversation, and the store refuses it.

use super::{PgStore, corrupt, unavailable};
use sqlx::{PgConnection, Row};
use std::time::Duration;
use switchboard_engine::StoreError;

/// A lease held on a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The conversation.
    pub conversation: String,
    /// Who holds it (a worker id).
    pub owner: String,
    /// The fencing token; every write under this lease carries it.
    pub token: i64,
}

fn ttl_ms(ttl: Duration) -> i64 {
    ttl.as_millis().clamp(1, i64::MAX as u128) as i64
}

impl Lease {
    /// Takes the lease on `conversation` for `owner` inside the caller's transaction, if it is free,
    /// expired or already the owner's. `None` when another owner holds it.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn acquire_on(
        conn: &mut PgConnection,
        conversation: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let row = sqlx::query(
            "INSERT INTO leases AS l (conversation, owner, token, expires_at) \
             VALUES ($1, $2, 1, clock_timestamp() + $3::float8 * interval '1 millisecond') \
             ON CONFLICT (conversation) DO UPDATE SET owner = excluded.owner, token = l.token + 1, \
               expires_at = excluded.expires_at \
             WHERE l.owner IS NULL OR l.owner = excluded.owner OR l.expires_at < clock_timestamp() \
             RETURNING token",
        )
        .bind(conversation)
        .bind(owner)
        .bind(ttl_ms(ttl))
        .fetch_optional(&mut *conn)
        .await
        .map_err(unavailable)?;
        row.map(|r| {
            Ok(Lease {
                conversation: conversation.to_string(),
                owner: owner.to_string(),
                token: r.try_get(0).map_err(corrupt)?,
            })
        })
        .transpose()
    }

    /// Extends the lease by `ttl` from now; `false` when it is no longer ours (expired and taken).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn renew(&self, store: &PgStore, ttl: Duration) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE leases SET expires_at = clock_timestamp() + $3::float8 * interval '1 millisecond' \
             WHERE conversation = $1 AND token = $2",
        )
        .bind(&self.conversation)
        .bind(self.token)
        .bind(ttl_ms(ttl))
        .execute(store.pool())
        .await
        .map_err(unavailable)?
        .rows_affected();
        Ok(n == 1)
    }

    /// Gives the lease up (the token stays, so it is never reused); `false` if it was not ours any more.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn release(&self, store: &PgStore) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE leases SET owner = NULL, expires_at = clock_timestamp() WHERE conversation = $1 AND token = $2",
        )
        .bind(&self.conversation)
        .bind(self.token)
        .execute(store.pool())
        .await
        .map_err(unavailable)?
        .rows_affected();
        Ok(n == 1)
    }
}

impl PgStore {
    /// Takes the lease on a conversation for `owner` (see [`Lease::acquire_on`]).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn acquire_lease(
        &self,
        conversation: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let mut c = self.pool().acquire().await.map_err(unavailable)?;
        Lease::acquire_on(&mut c, conversation, owner, ttl).await
    }
}

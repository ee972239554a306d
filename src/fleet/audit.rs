//! Delivering a door's audit outbox (`unlock::audit_outbox`) to `fleet.audit`.
//!
//! Why it is shaped so: a batch is inserted in one transaction with
//! `ON CONFLICT (door_id, event_key) DO NOTHING`, and removed from the outbox only after the
//! commit returned. A crash, a kill or a lost reply anywhere in between leaves the batch in the
//! outbox; the next round sends it again and the unique key turns the repeats into no-ops. So
//! the table holds each event exactly once, whatever fails. The commit is asked to be durable
//! (`synchronous_commit = on` for the transaction), since the outbox forgets what it returned. The rows go as arrays through one
//! `unnest` statement: one round trip per batch, not per event.

use std::path::Path;

use postgres::Client;

use crate::error::Result;
use crate::fleet::db::db_err;
use crate::unlock::audit_outbox::{self, AuditEvent};

/// Events per transaction.
pub const BATCH: usize = 1000;

/// What one delivery did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delivered {
    /// Events sent (each batch's events, resent ones included).
    pub sent: usize,
    /// Rows the table did not have yet (`sent` minus repeats of earlier deliveries).
    pub new_rows: u64,
    /// Torn or altered lines dropped from the outbox, with their reasons.
    pub dropped: Vec<String>,
}

/// Sends everything in the outbox at `path` for the door logged in on `client`, batch by
/// batch, then removes what was committed, once (rewriting the rest after every batch would
/// copy a long outage's backlog a thousand times over on the door's SD card). On an error,
/// what was committed before it is removed and the error returned.
pub fn deliver(client: &mut Client, path: &Path) -> Result<Delivered> {
    let mut out = Delivered::default();
    let mut committed = 0u64;
    let sent = (|| -> Result<()> {
        loop {
            let p = audit_outbox::read_pending(path, committed, BATCH)?;
            if p.end == committed {
                return Ok(());
            }
            if !p.events.is_empty() {
                out.new_rows += insert(client, &p.events)?;
                out.sent += p.events.len();
            }
            committed = p.end;
            out.dropped.extend(p.bad);
        }
    })();
    audit_outbox::remove_delivered(path, committed)?;
    sent.map(|()| out)
}

/// Inserts `events` in one transaction; returns how many were new.
pub fn insert(client: &mut Client, events: &[AuditEvent]) -> Result<u64> {
    let mut tx = client
        .transaction()
        .map_err(|e| db_err("audit: starting a transaction", &e))?;
    // The outbox drops these events once the commit returns, so the commit must be durable
    // then, whatever the server's default (a site may run synchronous_commit = off).
    tx.batch_execute("SET LOCAL synchronous_commit = on")
        .map_err(|e| db_err("audit: asking for a durable commit", &e))?;
    let keys: Vec<&str> = events.iter().map(|e| e.key.as_str()).collect();
    let at_ms: Vec<i64> = events.iter().map(|e| e.at_ms).collect();
    let people: Vec<Option<&str>> = events.iter().map(|e| e.person.as_deref()).collect();
    let decisions: Vec<&str> = events.iter().map(|e| e.decision.as_str()).collect();
    let scores: Vec<Option<f32>> = events.iter().map(|e| e.score).collect();
    let live: Vec<Option<f32>> = events.iter().map(|e| e.live).collect();
    let reasons: Vec<&str> = events.iter().map(|e| e.reason.as_str()).collect();
    let n = tx
        .execute(
            "INSERT INTO fleet.audit (event_key, decided_at, person, decision, score, live_score, reason)
             SELECT k, to_timestamp(t / 1000.0), p, d, s, l, r
             FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::real[], $6::real[], $7::text[])
                  AS e(k, t, p, d, s, l, r)
             ON CONFLICT (door_id, event_key) DO NOTHING",
            &[&keys, &at_ms, &people, &decisions, &scores, &live, &reasons],
        )
        .map_err(|e| db_err("audit: inserting events", &e))?;
    tx.commit()
        .map_err(|e| db_err("audit: committing events", &e))?;
    Ok(n)
}

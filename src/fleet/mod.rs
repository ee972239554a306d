//! Fleet mode (issue #16): many doors, one PostgreSQL database at the centre.
//!
//! Why it exists: a building has many doors and one desk. People are enrolled once at the
//! desk, granted door groups, revoked centrally, and every door's decision is audited in one
//! place, while each door still decides alone from its local sealed store (so a network
//! outage never opens or blocks a door by itself; see `sync`).
//!
//! Why it is shaped so:
//! * **The database enforces who sees what** (`migrations/`): a door's login role reads only
//!   its own grants' templates and only inserts audit rows for itself, by PostgreSQL grants
//!   and row-level security, so a stolen door credential cannot read another door's people
//!   or rewrite history, whatever client it runs.
//! * **TLS with rustls** (`db`): no OpenSSL on the boards, static aarch64 builds.
//! * **Behind the `fleet` cargo feature** (default on): without `--db` nothing here runs and
//!   the single-door product behaves as before.

pub mod admin;
pub mod audit;
pub mod db;
pub mod migrate;
pub mod sync;
pub mod sync_index;

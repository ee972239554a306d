//! Versioned schema migrations: the SQL files of `src/fleet/migrations/`, compiled into the
//! binary, applied in order by `facegate fleet migrate`.
//!
//! Why so: the desk and every door run the same binary, so the schema it expects travels with
//! it. Each migration runs in one transaction together with its row in
//! `fleet.schema_version` (a failure leaves the database as it was), under an advisory lock
//! (two desks migrating at once wait for each other), and records the file's sha256: a
//! migration edited after it was applied is refused instead of silently skipped, and a
//! database newer than the binary is refused too. Applying again does nothing.

use postgres::Client;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::fleet::db::db_err;

/// One migration: its version (the file's number), name and SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order. A new file in `migrations/` must be added here (a unit test
/// checks the two agree).
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "0001_schema.sql",
    sql: include_str!("migrations/0001_schema.sql"),
}];

/// The advisory lock key serialising migrators (any constant unlikely to clash).
const LOCK_KEY: i64 = 0x6661_6365_6761_7465; // "facegate"

impl Migration {
    pub fn sha256(&self) -> String {
        crate::onnx::hex(&Sha256::digest(self.sql.as_bytes()))
    }
}

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateReport {
    /// Versions applied now.
    pub applied: Vec<i32>,
    /// The schema version after the run.
    pub version: i32,
}

/// Applies the migrations `client`'s database lacks. The role must be allowed to create
/// schemas and roles (a superuser or the database owner with CREATEROLE).
pub fn migrate(client: &mut Client) -> Result<MigrateReport> {
    {
        let mut tx = client.transaction().map_err(|e| db_err("migrate", &e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
            .map_err(|e| db_err("migrate: taking the migration lock", &e))?;
        tx.batch_execute(
            "CREATE SCHEMA IF NOT EXISTS fleet;
             CREATE TABLE IF NOT EXISTS fleet.schema_version (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 sha256 text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .map_err(|e| db_err("migrate: creating fleet.schema_version", &e))?;
        tx.commit().map_err(|e| db_err("migrate", &e))?;
    }
    let mut applied = Vec::new();
    for m in MIGRATIONS {
        let mut tx = client.transaction().map_err(|e| db_err("migrate", &e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
            .map_err(|e| db_err("migrate: taking the migration lock", &e))?;
        let what = format!("migrate: {} (version {})", m.name, m.version);
        let row = tx
            .query_opt(
                "SELECT sha256 FROM fleet.schema_version WHERE version = $1",
                &[&m.version],
            )
            .map_err(|e| db_err(&what, &e))?;
        if let Some(row) = row {
            let recorded: String = row.get(0);
            if recorded != m.sha256() {
                return Err(Error::Msg(format!(
                    "{what}: was changed after it was applied (sha256 {recorded} in the database, {} here): add a new migration instead",
                    m.sha256()
                )));
            }
            continue;
        }
        tx.batch_execute(m.sql).map_err(|e| db_err(&what, &e))?;
        tx.execute(
            "INSERT INTO fleet.schema_version (version, name, sha256) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &m.sha256()],
        )
        .map_err(|e| db_err(&what, &e))?;
        tx.commit().map_err(|e| db_err(&what, &e))?;
        applied.push(m.version);
    }
    let version = schema_version(client)?;
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    if version > known {
        return Err(Error::Msg(format!(
            "migrate: the database is at schema version {version}, newer than this facegate's {known}: upgrade facegate"
        )));
    }
    Ok(MigrateReport { applied, version })
}

/// The highest applied version (0 when none).
pub fn schema_version(client: &mut Client) -> Result<i32> {
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM fleet.schema_version",
            &[],
        )
        .map_err(|e| db_err("reading fleet.schema_version", &e))?;
    Ok(row.get(0))
}

/// Errors unless the database is at exactly this binary's schema version (commands other
/// than `migrate` check this first, so an old database gives one clear message).
pub fn require_current(client: &mut Client) -> Result<()> {
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    let v = match client.query_one(
        "SELECT coalesce(max(version), 0) FROM fleet.schema_version",
        &[],
    ) {
        Ok(r) => r.get::<_, i32>(0),
        // No schema yet: never migrated.
        Err(e)
            if e.code() == Some(&postgres::error::SqlState::UNDEFINED_TABLE)
                || e.code() == Some(&postgres::error::SqlState::INVALID_SCHEMA_NAME) =>
        {
            0
        }
        Err(e) => return Err(db_err("reading fleet.schema_version", &e)),
    };
    if v != known {
        return Err(Error::Msg(format!(
            "the fleet database is at schema version {v}, this facegate needs {known}: run `facegate fleet migrate --db URL`"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_file_is_listed_in_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/fleet/migrations");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
        assert_eq!(files, listed, "src/fleet/migrations and MIGRATIONS differ");
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1);
            assert!(m.name.starts_with(&format!("{:04}_", m.version)));
        }
    }
}

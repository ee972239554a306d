//! The desk's operations on the fleet database: people and their templates, doors and door
//! groups, grants, revocations, and reading the audit.
//!
//! Why plain functions on a `Client`: the CLI (`facegate fleet …`) and the tests call the same
//! code, and every rule that matters for security is in the database itself (roles, RLS,
//! constraints; `migrations/`), so these functions only validate input early for clear
//! messages and turn names into ids. Every change is one transaction.

use postgres::{Client, GenericClient};

use crate::error::{Error, Result};
use crate::fleet::db::db_err;
use crate::unlock::store::{validate_user_name, MAX_DIM};

/// Largest number of templates stored per person and model by one enrolment.
pub const MAX_TEMPLATES_PER_ENROLMENT: usize = 100;

/// A door's login role: `facegate_door_<name>`.
pub fn door_role(door: &str) -> String {
    format!("facegate_door_{door}")
}

/// Door names: 1..=40 of `a-z 0-9 _`, starting with a letter or digit (they become role names).
pub fn validate_door_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::Msg(format!(
            "door name {name:?}: 1 to 40 of a-z, 0-9 and '_', starting with a letter or digit"
        )))
    }
}

/// Door group names: 1..=64 of `a-z 0-9 _ -`, starting with a letter or digit.
pub fn validate_group_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::Msg(format!(
            "door group name {name:?}: 1 to 64 of a-z, 0-9, '_' and '-', starting with a letter or digit"
        )))
    }
}

/// Embedding as stored: little-endian f32.
pub fn embedding_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The inverse of [`embedding_bytes`]; `None` when the length is not `4 × dim`.
pub fn embedding_from_bytes(b: &[u8], dim: usize) -> Option<Vec<f32>> {
    (b.len() == 4 * dim).then(|| {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    })
}

fn person_id(c: &mut impl GenericClient, name: &str) -> Result<i64> {
    c.query_opt("SELECT id FROM fleet.people WHERE name = $1", &[&name])
        .map_err(|e| db_err(&format!("looking up person {name:?}"), &e))?
        .map(|r| r.get(0))
        .ok_or_else(|| Error::Msg(format!("no person {name:?} in the fleet database")))
}

fn group_id(c: &mut impl GenericClient, name: &str) -> Result<i64> {
    c.query_opt("SELECT id FROM fleet.door_groups WHERE name = $1", &[&name])
        .map_err(|e| db_err(&format!("looking up door group {name:?}"), &e))?
        .map(|r| r.get(0))
        .ok_or_else(|| Error::Msg(format!("no door group {name:?} in the fleet database")))
}

/// Stores `templates` (from the recogniser file `model_id`, `dim` floats each, L2-normalised)
/// for `person`, creating the person if new. `replace`: the person's earlier templates of
/// that model go (in the same transaction). Returns how many are stored now for that model.
pub fn enrol_templates(
    client: &mut Client,
    person: &str,
    model_id: &str,
    dim: usize,
    templates: &[Vec<f32>],
    replace: bool,
) -> Result<i64> {
    validate_user_name(person)?;
    if templates.is_empty() || templates.len() > MAX_TEMPLATES_PER_ENROLMENT {
        return Err(Error::Msg(format!(
            "enrolment of {person:?}: {} templates (1 to {MAX_TEMPLATES_PER_ENROLMENT} accepted)",
            templates.len()
        )));
    }
    if dim == 0 || dim > MAX_DIM {
        return Err(Error::Msg(format!(
            "embedding dimension {dim} is not in 1..={MAX_DIM}"
        )));
    }
    // The same checks as the local store (dimension, finite, unit length) via a scratch store.
    let mut scratch = crate::unlock::store::TemplateStore::new(model_id, dim)?;
    scratch.add_templates(person, templates.to_vec())?;
    let what = format!("enrolling {person:?}");
    let mut tx = client.transaction().map_err(|e| db_err(&what, &e))?;
    tx.execute(
        "INSERT INTO fleet.people (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
        &[&person],
    )
    .map_err(|e| db_err(&what, &e))?;
    let pid = person_id(&mut tx, person)?;
    if replace {
        tx.execute(
            "DELETE FROM fleet.templates WHERE person_id = $1 AND model_id = $2",
            &[&pid, &model_id],
        )
        .map_err(|e| db_err(&what, &e))?;
    }
    let dim_i = dim as i32;
    for t in templates {
        tx.execute(
            "INSERT INTO fleet.templates (person_id, model_id, dim, embedding) VALUES ($1, $2, $3, $4)",
            &[&pid, &model_id, &dim_i, &embedding_bytes(t)],
        )
        .map_err(|e| db_err(&what, &e))?;
    }
    let n: i64 = tx
        .query_one(
            "SELECT count(*) FROM fleet.templates WHERE person_id = $1 AND model_id = $2",
            &[&pid, &model_id],
        )
        .map_err(|e| db_err(&what, &e))?
        .get(0);
    tx.commit().map_err(|e| db_err(&what, &e))?;
    Ok(n)
}

/// Creates the door group if it does not exist.
pub fn ensure_group(c: &mut impl GenericClient, group: &str) -> Result<()> {
    validate_group_name(group)?;
    c.execute(
        "INSERT INTO fleet.door_groups (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
        &[&group],
    )
    .map_err(|e| db_err(&format!("creating door group {group:?}"), &e))?;
    Ok(())
}

/// A new random door password (192 bits, hex).
pub fn new_password() -> Result<String> {
    let mut raw = [0u8; 24];
    getrandom::fill(&mut raw).map_err(|e| Error::Msg(format!("random source: {e}")))?;
    Ok(crate::onnx::hex(&raw))
}

/// A new door: its login role (member of `facegate_door`, with `password` given as a SCRAM
/// verifier so the clear password never reaches the server's logs), its row, and its groups
/// (created when new). Returns the role name. Needs CREATEROLE.
pub fn add_door(
    client: &mut Client,
    door: &str,
    groups: &[String],
    password: &str,
) -> Result<String> {
    validate_door_name(door)?;
    for g in groups {
        validate_group_name(g)?;
    }
    let role = door_role(door);
    let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
    let what = format!("adding door {door:?}");
    let mut tx = client.transaction().map_err(|e| db_err(&what, &e))?;
    // Utility statements take no parameters: format() quotes the name and the verifier.
    let stmt: String = tx
        .query_one(
            "SELECT format('CREATE ROLE %I LOGIN PASSWORD %L IN ROLE facegate_door', $1::text, $2::text)",
            &[&role, &verifier],
        )
        .map_err(|e| db_err(&what, &e))?
        .get(0);
    tx.batch_execute(&stmt).map_err(|e| db_err(&what, &e))?;
    let door_id: i64 = tx
        .query_one(
            "INSERT INTO fleet.doors (name, db_role) VALUES ($1, $2) RETURNING id",
            &[&door, &role],
        )
        .map_err(|e| db_err(&what, &e))?
        .get(0);
    for g in groups {
        ensure_group(&mut tx, g)?;
        let gid = group_id(&mut tx, g)?;
        tx.execute(
            "INSERT INTO fleet.door_group_members (group_id, door_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&gid, &door_id],
        )
        .map_err(|e| db_err(&what, &e))?;
    }
    tx.commit().map_err(|e| db_err(&what, &e))?;
    Ok(role)
}

/// Puts a door into a group (created when new).
pub fn add_door_to_group(client: &mut Client, door: &str, group: &str) -> Result<()> {
    let what = format!("adding door {door:?} to group {group:?}");
    let mut tx = client.transaction().map_err(|e| db_err(&what, &e))?;
    ensure_group(&mut tx, group)?;
    let gid = group_id(&mut tx, group)?;
    let did: i64 = tx
        .query_opt("SELECT id FROM fleet.doors WHERE name = $1", &[&door])
        .map_err(|e| db_err(&what, &e))?
        .map(|r| r.get(0))
        .ok_or_else(|| Error::Msg(format!("{what}: no door {door:?}")))?;
    tx.execute(
        "INSERT INTO fleet.door_group_members (group_id, door_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&gid, &did],
    )
    .map_err(|e| db_err(&what, &e))?;
    tx.commit().map_err(|e| db_err(&what, &e))
}

/// Grants `person` the doors of `group` from `valid_from` (default now) until `valid_until`
/// (default open-ended); times as PostgreSQL reads them (ISO 8601 with a zone). A grant made
/// after a revocation opens again.
pub fn grant(
    client: &mut Client,
    person: &str,
    group: &str,
    valid_from: Option<&str>,
    valid_until: Option<&str>,
) -> Result<()> {
    let what = format!("granting {person:?} the doors of {group:?}");
    let mut tx = client.transaction().map_err(|e| db_err(&what, &e))?;
    let pid = person_id(&mut tx, person)?;
    let gid = group_id(&mut tx, group)?;
    tx.execute(
        "INSERT INTO fleet.grants (person_id, group_id, valid_from, valid_until)
         VALUES ($1, $2, coalesce($3::text::timestamptz, now()), $4::text::timestamptz)",
        &[&pid, &gid, &valid_from, &valid_until],
    )
    .map_err(|e| db_err(&what, &e))?;
    tx.commit().map_err(|e| db_err(&what, &e))
}

/// Revokes every grant `person` holds now, for one group or (`None`) every door. Returns the
/// change number it took (doors that synced past it deny the person).
pub fn revoke(client: &mut Client, person: &str, group: Option<&str>, reason: &str) -> Result<i64> {
    let what = format!("revoking {person:?}");
    let mut tx = client.transaction().map_err(|e| db_err(&what, &e))?;
    let pid = person_id(&mut tx, person)?;
    let gid = match group {
        Some(g) => Some(group_id(&mut tx, g)?),
        None => None,
    };
    let change: i64 = tx
        .query_one(
            "INSERT INTO fleet.revocations (person_id, group_id, reason) VALUES ($1, $2, $3) RETURNING change_no",
            &[&pid, &gid, &reason],
        )
        .map_err(|e| db_err(&what, &e))?
        .get(0);
    tx.commit().map_err(|e| db_err(&what, &e))?;
    Ok(change)
}

/// One person, as `fleet people` lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonRow {
    pub name: String,
    /// Templates per recogniser model id.
    pub templates: Vec<(String, i64)>,
    /// Door groups granted now (valid, not revoked).
    pub groups: Vec<String>,
}

/// Everyone, by name.
pub fn people(client: &mut Client) -> Result<Vec<PersonRow>> {
    let rows = client
        .query(
            "SELECT p.name,
                    coalesce((SELECT array_agg(t.model_id || '=' || t.n ORDER BY t.model_id)
                              FROM (SELECT model_id, count(*) AS n FROM fleet.templates
                                    WHERE person_id = p.id GROUP BY model_id) t), '{}'),
                    coalesce((SELECT array_agg(DISTINCT dg.name ORDER BY dg.name)
                              FROM fleet.grants g JOIN fleet.door_groups dg ON dg.id = g.group_id
                              WHERE g.person_id = p.id AND g.valid_from <= now()
                                AND (g.valid_until IS NULL OR now() < g.valid_until)
                                AND NOT EXISTS (SELECT 1 FROM fleet.revocations r
                                    WHERE r.person_id = g.person_id
                                      AND (r.group_id IS NULL OR r.group_id = g.group_id)
                                      AND r.change_no > g.change_no)), '{}')
             FROM fleet.people p ORDER BY p.name",
            &[],
        )
        .map_err(|e| db_err("listing people", &e))?;
    Ok(rows
        .iter()
        .map(|r| {
            let t: Vec<String> = r.get(1);
            PersonRow {
                name: r.get(0),
                templates: t
                    .iter()
                    .filter_map(|s| {
                        let (m, n) = s.rsplit_once('=')?;
                        Some((m.to_string(), n.parse().ok()?))
                    })
                    .collect(),
                groups: r.get(2),
            }
        })
        .collect())
}

/// One door, as `fleet doors` lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct DoorRow {
    pub name: String,
    pub role: String,
    pub groups: Vec<String>,
}

/// Every door, by name.
pub fn doors(client: &mut Client) -> Result<Vec<DoorRow>> {
    let rows = client
        .query(
            "SELECT d.name, d.db_role::text,
                    coalesce((SELECT array_agg(g.name ORDER BY g.name) FROM fleet.door_group_members m
                              JOIN fleet.door_groups g ON g.id = m.group_id WHERE m.door_id = d.id), '{}')
             FROM fleet.doors d ORDER BY d.name",
            &[],
        )
        .map_err(|e| db_err("listing doors", &e))?;
    Ok(rows
        .iter()
        .map(|r| DoorRow {
            name: r.get(0),
            role: r.get(1),
            groups: r.get(2),
        })
        .collect())
}

/// One audit row, as `fleet audit` lists them (times in UTC, ISO 8601).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    pub id: i64,
    pub door: String,
    pub event_key: String,
    pub decided_at: String,
    pub received_at: String,
    pub person: Option<String>,
    pub decision: String,
    pub score: Option<f32>,
    pub live_score: Option<f32>,
    pub reason: String,
}

/// The latest `limit` audit rows (of one door when given), oldest first.
pub fn audit(client: &mut Client, door: Option<&str>, limit: i64) -> Result<Vec<AuditRow>> {
    let rows = client
        .query(
            "SELECT * FROM (
                 SELECT a.id, d.name, a.event_key,
                        to_char(a.decided_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
                        to_char(a.received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
                        a.person, a.decision, a.score, a.live_score, a.reason
                 FROM fleet.audit a JOIN fleet.doors d ON d.id = a.door_id
                 WHERE $1::text IS NULL OR d.name = $1
                 ORDER BY a.id DESC LIMIT $2) x
             ORDER BY id",
            &[&door, &limit],
        )
        .map_err(|e| db_err("reading the audit", &e))?;
    Ok(rows
        .iter()
        .map(|r| AuditRow {
            id: r.get(0),
            door: r.get(1),
            event_key: r.get(2),
            decided_at: r.get(3),
            received_at: r.get(4),
            person: r.get(5),
            decision: r.get(6),
            score: r.get(7),
            live_score: r.get(8),
            reason: r.get(9),
        })
        .collect())
}

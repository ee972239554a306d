//! The fleet database against a real PostgreSQL server (a throwaway cluster per test, see
//! `tests/pg`): migrations, TLS and credentials, and what each role can and cannot do, as the
//! server enforces it (grants, row-level security, the append-only trigger), and what a door's
//! sync pulls into its store.
#![cfg(feature = "fleet")]

mod pg;

use std::path::PathBuf;

use facegate::fleet::admin;
use facegate::fleet::db::{self, Credentials, DbTarget};
use facegate::fleet::migrate;
use facegate::fleet::sync::sync_once;
use facegate::unlock::app::{self, StoreFiles};
use facegate::unlock::seal::DeviceKey;
use facegate::unlock::store::TemplateStore;
use pg::Pg;
use postgres::Client;

const MODEL: &str = "sha256:test-model";
const DIM: usize = 8;

/// A unit vector pointing mostly along axis `i`.
fn unit(i: usize) -> Vec<f32> {
    let mut v = [0.1f32; DIM];
    v[i % DIM] = 1.0;
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

struct Fleet {
    pg: Pg,
    dir: tempfile::TempDir,
    su_cred: PathBuf,
}

impl Fleet {
    /// A cluster with a migrated `fleet` database.
    fn new() -> Fleet {
        let pg = Pg::start();
        let dir = tempfile::tempdir().unwrap();
        let su_cred = dir.path().join("superuser.cred");
        Credentials::create(&su_cred, pg::SUPERUSER, &pg.password).unwrap();
        let f = Fleet { pg, dir, su_cred };
        let mut c = db::connect(&f.target("postgres", &f.su_cred)).unwrap();
        c.batch_execute("CREATE DATABASE fleet").unwrap();
        let r = migrate::migrate(&mut f.su()).unwrap();
        assert_eq!(r.applied, vec![1]);
        f
    }

    fn target(&self, dbname: &str, cred: &std::path::Path) -> DbTarget {
        DbTarget::new(&self.pg.url(dbname), Some(&self.pg.ca), Some(cred))
    }

    fn su(&self) -> Client {
        db::connect(&self.target("fleet", &self.su_cred)).unwrap()
    }

    /// Adds a door in `groups` and returns its credentials file.
    fn add_door(&self, name: &str, groups: &[&str]) -> PathBuf {
        let groups: Vec<String> = groups.iter().map(|s| s.to_string()).collect();
        let password = admin::new_password().unwrap();
        let role = admin::add_door(&mut self.su(), name, &groups, &password).unwrap();
        let p = self.dir.path().join(format!("{name}.cred"));
        Credentials::create(&p, &role, &password).unwrap();
        p
    }

    fn connect_as(&self, cred: &std::path::Path) -> Client {
        db::connect(&self.target("fleet", cred)).unwrap()
    }

    /// A desk login role that is not a superuser: member of facegate_admin, may create roles.
    fn desk(&self) -> PathBuf {
        let p = self.dir.path().join("desk.cred");
        if p.exists() {
            return p;
        }
        let mut su = self.su();
        su.batch_execute(
            "CREATE ROLE desk LOGIN CREATEROLE PASSWORD 'desk-pw' IN ROLE facegate_admin",
        )
        .unwrap();
        // PostgreSQL 16+: CREATEROLE alone no longer lets a role hand out membership of
        // facegate_door; the desk needs ADMIN OPTION on it (and should not act as a door).
        let v: i32 = su
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .unwrap()
            .get(0);
        if v >= 160000 {
            su.batch_execute(
                "GRANT facegate_door TO desk WITH ADMIN OPTION, INHERIT FALSE, SET FALSE",
            )
            .unwrap();
        }
        Credentials::create(&p, "desk", "desk-pw").unwrap();
        p
    }
}

/// Names of the people whose templates `client` can read, with how many.
fn visible(client: &mut Client) -> Vec<(String, i64)> {
    client
        .query(
            "SELECT p.name, count(*) FROM fleet.templates t JOIN fleet.people p ON p.id = t.person_id
             GROUP BY p.name ORDER BY p.name",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// The error of a connection that must fail.
fn refused(t: &DbTarget) -> String {
    match db::connect(t) {
        Ok(_) => panic!("connected to {} but should not have", t.display()),
        Err(e) => e.to_string(),
    }
}

fn err_text(e: postgres::Error) -> String {
    db::db_err("x", &e).to_string()
}

#[test]
fn migrate_is_versioned_and_idempotent() {
    let f = Fleet::new();
    let mut c = f.su();
    // Again: nothing to do, same version.
    let r = migrate::migrate(&mut c).unwrap();
    assert!(r.applied.is_empty(), "{r:?}");
    assert_eq!(r.version, 1);
    migrate::require_current(&mut c).unwrap();
    // An edited migration is refused, not skipped.
    c.execute(
        "UPDATE fleet.schema_version SET sha256 = 'x' WHERE version = 1",
        &[],
    )
    .unwrap();
    let e = migrate::migrate(&mut c).unwrap_err().to_string();
    assert!(e.contains("was changed after it was applied"), "{e}");
    c.execute(
        "UPDATE fleet.schema_version SET sha256 = $1 WHERE version = 1",
        &[&migrate::MIGRATIONS[0].sha256()],
    )
    .unwrap();
    // A database newer than the binary is refused.
    c.execute(
        "INSERT INTO fleet.schema_version (version, name, sha256) VALUES (99, 'future', '')",
        &[],
    )
    .unwrap();
    let e = migrate::migrate(&mut c).unwrap_err().to_string();
    assert!(e.contains("newer than this facegate"), "{e}");
    let e = migrate::require_current(&mut c).unwrap_err().to_string();
    assert!(e.contains("schema version 99"), "{e}");
    // A database never migrated says so.
    c.batch_execute("CREATE DATABASE empty").unwrap();
    let mut e2 = db::connect(&f.target("empty", &f.su_cred)).unwrap();
    let e = migrate::require_current(&mut e2).unwrap_err().to_string();
    assert!(e.contains("run `facegate fleet migrate"), "{e}");
}

#[test]
fn connections_are_tls_verified_and_credentials_private() {
    let f = Fleet::new();
    // Another CA: the server's certificate does not chain to it.
    let other = f.dir.path().join("other-ca.pem");
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=another CA", "-keyout"])
        .arg(f.dir.path().join("other-ca.key"))
        .arg("-out")
        .arg(&other)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = DbTarget::new(&f.pg.url("fleet"), Some(&other), Some(&f.su_cred));
    let e = refused(&t);
    assert!(e.contains("database postgres://127.0.0.1"), "{e}");
    assert!(!e.contains('\n'), "{e}");
    // No CA: refused before connecting.
    let t = DbTarget::new(&f.pg.url("fleet"), None, Some(&f.su_cred));
    let e = refused(&t);
    assert!(e.contains("needs the server's CA certificate"), "{e}");
    // sslmode=disable over TCP: refused.
    let url = format!("{}?sslmode=disable", f.pg.url("fleet"));
    let t = DbTarget::new(&url, Some(&f.pg.ca), Some(&f.su_cred));
    let e = refused(&t);
    assert!(e.contains("sslmode=disable refused"), "{e}");
    // A password in the URL: refused.
    let url = format!(
        "postgres://postgres:{}@127.0.0.1:{}/fleet",
        f.pg.password, f.pg.port
    );
    let e = refused(&DbTarget::new(&url, Some(&f.pg.ca), None));
    assert!(e.contains("holds a password"), "{e}");
    assert!(
        !e.contains(&f.pg.password),
        "the message shows the password: {e}"
    );
    // A credentials file others can read: refused, naming the file.
    use std::os::unix::fs::PermissionsExt;
    let loose = f.dir.path().join("loose.cred");
    std::fs::write(
        &loose,
        format!("user = \"postgres\"\npassword = \"{}\"\n", f.pg.password),
    )
    .unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = refused(&f.target("fleet", &loose));
    assert!(e.contains("loose.cred"), "{e}");
    // The wrong password: the server's refusal, on one line.
    let wrong = f.dir.path().join("wrong.cred");
    Credentials::create(&wrong, "postgres", "not-it").unwrap();
    let e = refused(&f.target("fleet", &wrong));
    assert!(e.contains("password authentication failed"), "{e}");
    // The right one over verified TLS, and the server says the session is encrypted.
    let mut c = f.su();
    let ssl: bool = c
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(ssl);
}

/// east: door a; west: door b. alice → east, bob → west, carol → both.
fn building(f: &Fleet) -> (PathBuf, PathBuf) {
    let a = f.add_door("a", &["east"]);
    let b = f.add_door("b", &["west"]);
    let desk = f.desk();
    let mut d = f.connect_as(&desk);
    for (i, p) in ["alice", "bob", "carol"].iter().enumerate() {
        let n =
            admin::enrol_templates(&mut d, p, MODEL, DIM, &[unit(i), unit(i + 3)], false).unwrap();
        assert_eq!(n, 2);
    }
    // Templates of another recogniser file are stored apart.
    admin::enrol_templates(&mut d, "alice", "sha256:other", DIM, &[unit(7)], false).unwrap();
    admin::grant(&mut d, "alice", "east", None, None).unwrap();
    admin::grant(&mut d, "bob", "west", None, None).unwrap();
    admin::grant(&mut d, "carol", "east", None, None).unwrap();
    admin::grant(&mut d, "carol", "west", None, None).unwrap();
    (a, b)
}

#[test]
fn a_door_reads_only_the_templates_granted_to_its_groups() {
    let f = Fleet::new();
    let (a, b) = building(&f);
    let mut ca = f.connect_as(&a);
    let mut cb = f.connect_as(&b);
    assert_eq!(
        visible(&mut ca),
        vec![("alice".into(), 3), ("carol".into(), 2)]
    );
    assert_eq!(
        visible(&mut cb),
        vec![("bob".into(), 2), ("carol".into(), 2)]
    );
    // Even asking by id for bob's rows gives door a nothing.
    let n: i64 = ca
        .query_one(
            "SELECT count(*) FROM fleet.templates t WHERE t.person_id = (SELECT id FROM fleet.people WHERE name = 'bob')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // The tables behind the grants are closed to doors altogether.
    for table in [
        "grants",
        "revocations",
        "doors",
        "door_groups",
        "door_group_members",
        "audit",
    ] {
        let e = err_text(
            ca.query(&format!("SELECT * FROM fleet.{table}"), &[])
                .unwrap_err(),
        );
        assert!(e.contains("permission denied"), "{table}: {e}");
    }
    // And a door writes nothing but audit.
    let e = err_text(
        ca.execute("INSERT INTO fleet.people (name) VALUES ('mallory')", &[])
            .unwrap_err(),
    );
    assert!(e.contains("permission denied"), "{e}");
    let e = err_text(ca.execute("DELETE FROM fleet.templates", &[]).unwrap_err());
    assert!(e.contains("permission denied"), "{e}");

    // Revoking carol at the east doors: door a no longer reads her; door b still does.
    let mut desk = f.su();
    let before: i64 = state(&mut ca).0;
    let change = admin::revoke(&mut desk, "carol", Some("east"), "left the east wing").unwrap();
    assert!(change > before);
    assert_eq!(visible(&mut ca), vec![("alice".into(), 3)]);
    assert_eq!(
        visible(&mut cb),
        vec![("bob".into(), 2), ("carol".into(), 2)]
    );
    assert!(state(&mut ca).0 >= change);
    // Revoked everywhere: gone from b too. Granted again later: back at a.
    admin::revoke(&mut desk, "carol", None, "badge lost").unwrap();
    assert_eq!(visible(&mut cb), vec![("bob".into(), 2)]);
    admin::grant(&mut desk, "carol", "east", None, None).unwrap();
    assert_eq!(
        visible(&mut ca),
        vec![("alice".into(), 3), ("carol".into(), 2)]
    );
    assert_eq!(visible(&mut cb), vec![("bob".into(), 2)]);
}

/// (change number, digest, people, templates, next boundary) of the door's view of MODEL.
fn state(c: &mut Client) -> (i64, String, i64, i64, Option<std::time::SystemTime>) {
    let r = c
        .query_one("SELECT * FROM fleet.door_state($1)", &[&MODEL])
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))
}

#[test]
fn grants_count_only_within_their_validity() {
    let f = Fleet::new();
    let a = f.add_door("a", &["east"]);
    let mut d = f.su();
    for (i, p) in ["past", "future", "now"].iter().enumerate() {
        admin::enrol_templates(&mut d, p, MODEL, DIM, &[unit(i)], false).unwrap();
    }
    admin::grant(
        &mut d,
        "past",
        "east",
        Some("2001-01-01T00:00:00Z"),
        Some("2002-01-01T00:00:00Z"),
    )
    .unwrap();
    admin::grant(&mut d, "future", "east", Some("2999-01-01T00:00:00Z"), None).unwrap();
    admin::grant(&mut d, "now", "east", None, Some("2999-06-01T00:00:00Z")).unwrap();
    let mut ca = f.connect_as(&a);
    assert_eq!(visible(&mut ca), vec![("now".into(), 1)]);
    let (_, digest, people, templates, next) = state(&mut ca);
    assert_eq!((people, templates), (1, 1));
    assert_eq!(digest.len(), 32);
    // The next change by time alone: the future grant's start.
    let next = next.expect("a next boundary");
    let secs = next
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(secs, 32472144000, "2999-01-01T00:00:00Z");
    // A grant that ends before it starts is refused by the database.
    let e = admin::grant(
        &mut d,
        "now",
        "east",
        Some("2030-01-01T00:00:00Z"),
        Some("2029-01-01T00:00:00Z"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("check constraint"), "{e}");
}

#[test]
fn a_door_only_appends_audit_rows_for_itself() {
    let f = Fleet::new();
    let (a, b) = building(&f);
    let mut ca = f.connect_as(&a);
    let insert = "INSERT INTO fleet.audit (event_key, decided_at, person, decision, score, live_score, reason)
                  VALUES ($1, now(), 'alice', 'unlock', 0.8, 0.9, '') ON CONFLICT (door_id, event_key) DO NOTHING";
    assert_eq!(ca.execute(insert, &[&"ev-1"]).unwrap(), 1);
    // The same event again (a retry after a lost reply): nothing more.
    assert_eq!(ca.execute(insert, &[&"ev-1"]).unwrap(), 0);
    assert_eq!(ca.execute(insert, &[&"ev-2"]).unwrap(), 1);
    // As another door: refused by row-level security.
    let b_id: i64 = f
        .su()
        .query_one("SELECT id FROM fleet.doors WHERE name = 'b'", &[])
        .unwrap()
        .get(0);
    let e = err_text(
        ca.execute(
            "INSERT INTO fleet.audit (door_id, event_key, decided_at, decision) VALUES ($1, 'forged', now(), 'unlock')",
            &[&b_id],
        )
        .unwrap_err(),
    );
    assert!(e.contains("row-level security"), "{e}");
    // Never read, changed or removed by a door.
    // It may see which of its own event keys arrived (ON CONFLICT needs that), and nothing of
    // another door's.
    let keys: Vec<String> = ca
        .query("SELECT event_key FROM fleet.audit ORDER BY event_key", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(keys, vec!["ev-1".to_string(), "ev-2".to_string()]);
    for sql in [
        "SELECT * FROM fleet.audit",
        "UPDATE fleet.audit SET decision = 'deny'",
        "DELETE FROM fleet.audit",
        "TRUNCATE fleet.audit",
    ] {
        let e = err_text(ca.execute(sql, &[]).unwrap_err());
        assert!(e.contains("permission denied"), "{sql}: {e}");
    }
    // Door b's credentials do not write as a.
    let mut cb = f.connect_as(&b);
    assert_eq!(
        cb.execute(insert, &[&"ev-1"]).unwrap(),
        1,
        "b's own ev-1 is another event"
    );
    let n: i64 = ca
        .query_one("SELECT count(*) FROM fleet.audit", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "door a sees b's audit keys");
    // The desk reads it all but cannot change it either; nor can the owner (the trigger).
    let desk = f.desk();
    let mut cd = f.connect_as(&desk);
    let rows = admin::audit(&mut cd, None, 100).unwrap();
    let seen: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.door.as_str(), r.event_key.as_str()))
        .collect();
    assert_eq!(seen, vec![("a", "ev-1"), ("a", "ev-2"), ("b", "ev-1")]);
    assert_eq!(rows[0].person.as_deref(), Some("alice"));
    assert_eq!(admin::audit(&mut cd, Some("b"), 100).unwrap().len(), 1);
    for sql in [
        "UPDATE fleet.audit SET decision = 'deny'",
        "DELETE FROM fleet.audit",
    ] {
        let e = err_text(cd.execute(sql, &[]).unwrap_err());
        assert!(e.contains("permission denied"), "desk {sql}: {e}");
        let e = err_text(f.su().execute(sql, &[]).unwrap_err());
        assert!(e.contains("append-only"), "owner {sql}: {e}");
    }
    let e = err_text(f.su().execute("TRUNCATE fleet.audit", &[]).unwrap_err());
    assert!(e.contains("append-only"), "{e}");
}

#[test]
fn the_desk_role_manages_the_fleet_without_superuser() {
    let f = Fleet::new();
    let desk = f.desk();
    let mut d = f.connect_as(&desk);
    // A door made by the desk role (CREATEROLE, member of facegate_admin).
    let pw = admin::new_password().unwrap();
    let role = admin::add_door(&mut d, "lobby", &["ground".into()], &pw).unwrap();
    assert_eq!(role, "facegate_door_lobby");
    let cred = f.dir.path().join("lobby.cred");
    Credentials::create(&cred, &role, &pw).unwrap();
    admin::enrol_templates(&mut d, "dana", MODEL, DIM, &[unit(1), unit(2)], false).unwrap();
    admin::grant(&mut d, "dana", "ground", None, None).unwrap();
    admin::add_door_to_group(&mut d, "lobby", "annex").unwrap();
    let doors = admin::doors(&mut d).unwrap();
    assert_eq!(doors.len(), 1);
    assert_eq!(
        doors[0].groups,
        vec!["annex".to_string(), "ground".to_string()]
    );
    let people = admin::people(&mut d).unwrap();
    assert_eq!(people[0].name, "dana");
    assert_eq!(people[0].templates, vec![(MODEL.to_string(), 2)]);
    assert_eq!(people[0].groups, vec!["ground".to_string()]);
    // Re-enrolling with replace keeps only the new templates.
    let n = admin::enrol_templates(&mut d, "dana", MODEL, DIM, &[unit(4)], true).unwrap();
    assert_eq!(n, 1);
    let mut door = f.connect_as(&cred);
    assert_eq!(visible(&mut door), vec![("dana".into(), 1)]);
    // Bad input is refused before the database: not unit length, bad names.
    let e = admin::enrol_templates(&mut d, "eve", MODEL, DIM, &[vec![1.0; DIM]], false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("L2-normalised"), "{e}");
    assert!(admin::add_door(&mut d, "Bad Name", &[], &pw).is_err());
    assert!(admin::enrol_templates(&mut d, "../x", MODEL, DIM, &[unit(0)], false).is_err());
    let e = admin::grant(&mut d, "nobody", "ground", None, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no person \"nobody\""), "{e}");
}

/// The store's people and their templates, in order.
fn contents(files: &StoreFiles) -> Vec<(String, Vec<Vec<f32>>)> {
    let key = DeviceKey::load(&files.key).unwrap();
    let s = TemplateStore::load(&files.store, &key).unwrap();
    s.users()
        .map(|(u, _)| {
            let ts = s.templates(u).unwrap().map(<[f32]>::to_vec).collect();
            (u.to_string(), ts)
        })
        .collect()
}

#[test]
fn a_sync_pulls_only_the_templates_the_door_lacks_and_equals_a_full_pull() {
    let f = Fleet::new();
    let (a, _) = building(&f);
    let mut ca = f.connect_as(&a);
    let files = StoreFiles::beside(&f.dir.path().join("a/templates.fgt"));
    let bytes_of = |templates: u64| templates * DIM as u64 * 4;
    // A full pull of what a fresh door would hold, for comparison after each change.
    let fresh = |n: usize| {
        let fresh = StoreFiles::beside(&f.dir.path().join(format!("fresh{n}/templates.fgt")));
        sync_once(&mut f.connect_as(&a), &fresh, MODEL, DIM).unwrap();
        contents(&fresh)
    };

    // First sync: alice's two MODEL templates and carol's two (alice's other-model one stays).
    let o = sync_once(&mut ca, &files, MODEL, DIM).unwrap();
    assert!(o.changed);
    assert_eq!((o.people, o.templates, o.bytes), (2, 4, bytes_of(4)));
    assert_eq!(
        contents(&files),
        vec![
            ("alice".to_string(), vec![unit(0), unit(3)]),
            ("carol".to_string(), vec![unit(2), unit(5)]),
        ]
    );
    // Nothing changed: nothing pulled, store untouched.
    let o = sync_once(&mut ca, &files, MODEL, DIM).unwrap();
    assert!(!o.changed);

    // Bob granted the east doors: only his two templates travel.
    let mut desk = f.su();
    admin::grant(&mut desk, "bob", "east", None, None).unwrap();
    let o = sync_once(&mut ca, &files, MODEL, DIM).unwrap();
    assert!(o.changed);
    assert_eq!((o.people, o.templates, o.bytes), (3, 6, bytes_of(2)));
    assert_eq!(contents(&files), fresh(1));
    // A new template for alice: one template travels.
    admin::enrol_templates(&mut desk, "alice", MODEL, DIM, &[unit(6)], false).unwrap();
    let o = sync_once(&mut ca, &files, MODEL, DIM).unwrap();
    assert_eq!((o.templates, o.bytes), (7, bytes_of(1)));
    assert_eq!(contents(&files), fresh(2));
    // Carol revoked: nothing travels but the list; she is gone.
    admin::revoke(&mut desk, "carol", None, "left").unwrap();
    let o = sync_once(&mut ca, &files, MODEL, DIM).unwrap();
    assert_eq!((o.people, o.templates, o.bytes), (2, 5, 0));
    let now = contents(&files);
    assert_eq!(now, fresh(3));
    assert!(now.iter().all(|(u, _)| u != "carol"));

    // Someone else writes the door's store (a local enrolment): the next round replaces it
    // with the database's view although the database did not change, pulling everything (an
    // index of another store generation is not trusted).
    let key = DeviceKey::load(&files.key).unwrap();
    let mut local = TemplateStore::load(&files.store, &key).unwrap();
    local.add_templates("mallory", vec![unit(1)]).unwrap();
    app::save_store(&local, &files).unwrap();
    let o = sync_once(&mut ca, &files, MODEL, DIM).unwrap();
    assert!(o.changed);
    assert_eq!((o.templates, o.bytes), (5, bytes_of(5)));
    assert_eq!(contents(&files), now);
}

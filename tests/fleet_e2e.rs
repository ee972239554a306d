//! Issue #16's acceptance, end to end with the real binary, real models, the recorded clips
//! and a real PostgreSQL server (tests/pg): a person enrolled at the desk unlocks at a granted
//! door and not at another; with the database down the door keeps deciding from its last
//! store, and its decisions wait in its audit outbox until the database is back, then land in
//! the audit exactly once; after `fleet revoke` the next sync denies them (the latency through
//! a running `facegate sync` is measured and printed, not asserted); a store whose last sync
//! is older than max_staleness_s refuses everyone.
#![cfg(feature = "fleet")]

mod common;
mod pg;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use facegate::fleet::db::{self, Credentials, DbTarget};
use facegate::fleet::migrate;
use facegate::unlock::audit_outbox;
use facegate::unlock::seal::DeviceKey;
use facegate::unlock::store::TemplateStore;
use facegate::unlock::sync_state::{self, SyncState};

const PERSON: &str = "lin_manuel_miranda";

fn facegate(args: &[&str]) -> Output {
    facegate_at(None, args)
}

/// libfaketime (Debian's `faketime` package), which moves one process's wall clock.
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// `facegate ARGS` with its wall clock moved by `offset` (libfaketime syntax, e.g. "+2h"), as
/// on a door whose clock is wrong; monotonic time stays real.
fn facegate_at(offset: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = common::bin_command(env!("CARGO_BIN_EXE_facegate"));
    cmd.args(args).env("RUST_LOG", "warn");
    if let Some(o) = offset {
        assert!(
            Path::new(FAKETIME_LIB).is_file(),
            "{FAKETIME_LIB} is missing: install Debian's faketime package (scripts/test.sh and .ci/run do)"
        );
        cmd.env("LD_PRELOAD", FAKETIME_LIB)
            .env("FAKETIME", o)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    }
    let out = cmd.output().unwrap();
    eprintln!(
        "$ {}facegate {}\n-> {:?}\n{}{}",
        offset.map_or(String::new(), |o| format!("(clock {o}) ")),
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with("frame "))
            .collect::<Vec<_>>()
            .join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn unlocked(o: &Output) -> usize {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with("frame ") && l.contains("UNLOCK"))
        .count()
}

/// `--db … --ca … --credentials …` for the desk (the superuser here).
fn db_args(pg: &pg::Pg, cred: &Path) -> Vec<String> {
    vec![
        "--db".into(),
        pg.url("fleet"),
        "--ca".into(),
        pg.ca.display().to_string(),
        "--credentials".into(),
        cred.display().to_string(),
    ]
}

fn fleet(pg: &pg::Pg, cred: &Path, args: &[&str]) -> Output {
    let mut a: Vec<String> = vec!["fleet".into()];
    a.extend(args.iter().map(|s| s.to_string()));
    // The flags after the subcommand (they belong to it).
    let (head, tail) = a.split_at(2);
    let mut all: Vec<String> = head.to_vec();
    all.extend(db_args(pg, cred));
    all.extend(tail.iter().cloned());
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    facegate(&refs)
}

/// A fresh `fleet` database on `pg`, migrated by the desk; returns the desk's credentials
/// (the superuser here).
fn new_site(pg: &pg::Pg, dir: &Path) -> PathBuf {
    let su = dir.join("desk.cred");
    Credentials::create(&su, pg::SUPERUSER, &pg.password).unwrap();
    db::connect(&DbTarget::new(&pg.url("postgres"), Some(&pg.ca), Some(&su)))
        .unwrap()
        .batch_execute("CREATE DATABASE fleet")
        .unwrap();
    assert!(fleet(pg, &su, &["migrate"]).status.success());
    su
}

/// `fleet add-door NAME --group GROUP`; returns the door's credentials file.
fn add_door(pg: &pg::Pg, su: &Path, dir: &Path, name: &str, group: &str) -> PathBuf {
    let cred = dir.join(format!("{name}.cred"));
    let o = fleet(
        pg,
        su,
        &[
            "add-door",
            name,
            "--group",
            group,
            "--credentials-out",
            cred.to_str().unwrap(),
        ],
    );
    assert!(o.status.success());
    cred
}

/// `fleet enroll` of PERSON from their example photos, with the desk's board.
fn enrol_at_the_desk(pg: &pg::Pg, su: &Path, dir: &Path) {
    let desk_board = common::board_with_test_models(dir, "x86-dev");
    let photos = format!(
        "images:{}",
        common::shared()
            .join("data/faces/examples")
            .join(PERSON)
            .display()
    );
    let o = fleet(
        pg,
        su,
        &[
            "enroll",
            "--board",
            desk_board.to_str().unwrap(),
            "--person",
            PERSON,
            "--source",
            &photos,
        ],
    );
    assert!(o.status.success());
}

/// The x86-dev board with the test models, as door `name`: its own store and [fleet] table.
fn door_board(dir: &Path, pg: &pg::Pg, name: &str, cred: &Path) -> (PathBuf, PathBuf) {
    let base = common::board_with_test_models(dir, "x86-dev");
    let mut doc: toml::Table = toml::from_str(&std::fs::read_to_string(&base).unwrap()).unwrap();
    let store = dir.join(format!("{name}/templates.fgt"));
    doc["store"]
        .as_table_mut()
        .unwrap()
        .insert("path".into(), store.display().to_string().into());
    let mut f = toml::Table::new();
    f.insert("db".into(), pg.url("fleet").into());
    f.insert("ca".into(), pg.ca.display().to_string().into());
    f.insert("credentials".into(), cred.display().to_string().into());
    f.insert("sync_interval_s".into(), 1.into());
    f.insert("max_staleness_s".into(), 600.into());
    doc.insert("fleet".into(), f.into());
    let out = dir.join(format!("door-{name}.toml"));
    std::fs::write(&out, toml::to_string(&doc).unwrap()).unwrap();
    (out, store)
}

fn hamilton(board: &Path) -> Output {
    hamilton_at(None, board)
}

fn hamilton_at(offset: Option<&str>, board: &Path) -> Output {
    let src = format!(
        "mjpeg:{}",
        common::shared()
            .join("data/video/hamilton_640x360.mjpeg")
            .display()
    );
    facegate_at(
        offset,
        &[
            "unlock",
            "--board",
            board.to_str().unwrap(),
            "--source",
            &src,
            "--once",
        ],
    )
}

/// The event keys waiting in a door's audit outbox.
fn outbox_keys(store: &Path) -> Vec<String> {
    audit_outbox::read_pending(&audit_outbox::default_path(store), 0, usize::MAX)
        .unwrap()
        .events
        .into_iter()
        .map(|e| e.key)
        .collect()
}

/// (door, event_key, decision, person) of every audit row, as the desk reads them.
fn audit_rows(pg: &pg::Pg, su: &Path) -> Vec<(String, String, String, Option<String>)> {
    let mut c = db::connect(&DbTarget::new(&pg.url("fleet"), Some(&pg.ca), Some(su))).unwrap();
    c.query(
        "SELECT d.name, a.event_key, a.decision, a.person FROM fleet.audit a
         JOIN fleet.doors d ON d.id = a.door_id ORDER BY a.id",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

fn users(store: &Path) -> Vec<String> {
    let key = DeviceKey::load(&facegate::unlock::seal::default_key_path(store)).unwrap();
    TemplateStore::load(store, &key)
        .unwrap()
        .users()
        .map(|(u, _)| u.to_string())
        .collect()
}

#[test]
fn enrolled_at_the_desk_unlocks_at_a_granted_door_only_until_revoked() {
    let mut pg = pg::Pg::start();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // The desk: schema (migrating twice does nothing the second time), two doors in two
    // groups, one person enrolled from photos and granted the east doors.
    let su = new_site(&pg, dir);
    let again = fleet(&pg, &su, &["migrate"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to do"));
    let a_cred = add_door(&pg, &su, dir, "a", "east");
    let b_cred = add_door(&pg, &su, dir, "b", "west");
    enrol_at_the_desk(&pg, &su, dir);
    assert!(
        fleet(&pg, &su, &["grant", "--person", PERSON, "--group", "east"])
            .status
            .success()
    );
    let people = fleet(&pg, &su, &["people"]);
    let listed = String::from_utf8_lossy(&people.stdout).into_owned();
    assert!(
        listed.contains(PERSON) && listed.contains("east"),
        "{listed}"
    );

    // The doors sync once: a holds the person, b nobody.
    let (a_board, a_store) = door_board(dir, &pg, "a", &a_cred);
    let (b_board, b_store) = door_board(dir, &pg, "b", &b_cred);
    for board in [&a_board, &b_board] {
        assert!(
            facegate(&["sync", "--board", board.to_str().unwrap(), "--once"])
                .status
                .success()
        );
    }
    assert_eq!(users(&a_store), vec![PERSON.to_string()]);
    assert!(users(&b_store).is_empty());

    // Granted door: unlocks. Other door: stays locked.
    let o = hamilton(&a_board);
    assert_eq!(o.status.code(), Some(0), "door a must unlock for {PERSON}");
    assert!(unlocked(&o) >= 1);
    let o = hamilton(&b_board);
    assert_eq!(o.status.code(), Some(1), "door b must stay locked");
    assert_eq!(unlocked(&o), 0);

    // Both decisions wait in the doors' outboxes until a sync delivers them: door a's unlock
    // of the person, door b's refusal of a face it does not know (and no unlock).
    let mut pending: Vec<String> = [&a_store, &b_store]
        .iter()
        .flat_map(|s| outbox_keys(s))
        .collect();
    assert!(!pending.is_empty());
    for board in [&a_board, &b_board] {
        assert!(
            facegate(&["sync", "--board", board.to_str().unwrap(), "--once"])
                .status
                .success()
        );
    }
    let rows = audit_rows(&pg, &su);
    assert!(
        rows.iter().any(|(d, _, what, who)| d == "a"
            && what == "unlock"
            && who.as_deref() == Some(PERSON)),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .all(|(d, _, what, _)| d == "a" || what != "unlock"),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .any(|(d, _, what, _)| d == "b" && what == "no_match"),
        "{rows:?}"
    );
    assert!(outbox_keys(&a_store).is_empty() && outbox_keys(&b_store).is_empty());

    // The database goes away: a sync fails on one line and leaves the store; the door keeps
    // deciding from it (fail-operational).
    pg.stop();
    let o = facegate(&["sync", "--board", a_board.to_str().unwrap(), "--once"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(users(&a_store), vec![PERSON.to_string()]);
    let o = hamilton(&a_board);
    assert_eq!(
        o.status.code(),
        Some(0),
        "door a must keep deciding while the database is down"
    );
    assert_eq!(hamilton(&b_board).status.code(), Some(1));
    // Every decision made meanwhile is kept, and a failed delivery keeps it still.
    let down: Vec<String> = [&a_store, &b_store]
        .iter()
        .flat_map(|s| outbox_keys(s))
        .collect();
    assert!(down.len() >= 2, "{down:?}");
    assert_eq!(
        facegate(&["sync", "--board", b_board.to_str().unwrap(), "--once"])
            .status
            .code(),
        Some(1)
    );
    let kept: Vec<String> = [&a_store, &b_store]
        .iter()
        .flat_map(|s| outbox_keys(s))
        .collect();
    assert_eq!(kept, down);
    pg.resume();
    // Back: one sync per door delivers them, and the audit holds every event exactly once.
    for board in [&a_board, &b_board] {
        assert!(
            facegate(&["sync", "--board", board.to_str().unwrap(), "--once"])
                .status
                .success()
        );
    }
    pending.extend(down);
    let mut got: Vec<String> = audit_rows(&pg, &su).into_iter().map(|r| r.1).collect();
    got.sort();
    pending.sort();
    assert_eq!(got, pending, "each event once, none lost");
    assert!(outbox_keys(&a_store).is_empty() && outbox_keys(&b_store).is_empty());

    // The last good sync made old (as if the door had been cut off for 20 minutes with
    // max_staleness_s = 600): the door refuses everyone. (Refusals by error do not count as
    // failed attempts, so they lock nobody out.) A sync brings it back.
    let key = DeviceKey::load(&facegate::unlock::seal::default_key_path(&a_store)).unwrap();
    let sp = sync_state::default_path(&a_store);
    let mut s = SyncState::load(&sp, &key).unwrap().unwrap();
    s.synced_at -= 1200;
    s.save(&sp, &key).unwrap();
    let o = hamilton(&a_board);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a stale store must refuse everyone"
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("max_staleness_s"));
    assert!(
        facegate(&["sync", "--board", a_board.to_str().unwrap(), "--once"])
            .status
            .success()
    );
    assert_eq!(hamilton(&a_board).status.code(), Some(0));
    // Its sync state gone: refused too, until the next sync.
    std::fs::remove_file(&sp).unwrap();
    assert_eq!(hamilton(&a_board).status.code(), Some(1));
    assert!(
        facegate(&["sync", "--board", a_board.to_str().unwrap(), "--once"])
            .status
            .success()
    );

    // A running `facegate sync` (interval 1 s) on door a; revoke; measure until the store no
    // longer holds the person.
    let mut daemon = common::bin_command(env!("CARGO_BIN_EXE_facegate"))
        .args(["sync", "--board", a_board.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Let it load its models and make its first rounds, so what is measured is a running
    // door (a settle time, not a timing assertion).
    std::thread::sleep(Duration::from_millis(2500));
    let t0 = Instant::now();
    assert!(fleet(
        &pg,
        &su,
        &["revoke", "--person", PERSON, "--reason", "test"]
    )
    .status
    .success());
    let latency = loop {
        if users(&a_store).is_empty() {
            break t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the revocation never reached door a"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!(
        "revocation latency to a running door (sync_interval_s = 1), from the start of `fleet revoke` to the rewritten store: {:.0} ms",
        latency.as_secs_f64() * 1e3
    );
    // SAFETY: SIGTERM to our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let st = daemon.wait().unwrap();
    assert!(st.success(), "sync must stop cleanly on SIGTERM: {st}");
    let o = hamilton(&a_board);
    assert_eq!(
        o.status.code(),
        Some(1),
        "door a must deny {PERSON} after the revocation"
    );
    assert_eq!(unlocked(&o), 0);

    // The schema is current.
    let mut c = db::connect(&DbTarget::new(&pg.url("fleet"), Some(&pg.ca), Some(&su))).unwrap();
    migrate::require_current(&mut c).unwrap();
}

/// `n` events written straight into a door's outbox in its line format (`<first 16 hex digits
/// of the JSON's sha256> <JSON>`), as a long database outage would leave it.
fn fill_outbox(store: &Path, n: usize) -> Vec<String> {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::OpenOptionsExt;
    let mut text = String::new();
    let keys: Vec<String> = (0..n).map(|i| format!("outage-{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        let json = serde_json::json!({
            "key": k, "at_ms": 1_764_000_000_000i64 + i as i64, "person": null,
            "decision": "no_match", "score": 0.25, "live": null, "reason": ""
        })
        .to_string();
        let sum: String = Sha256::digest(json.as_bytes())[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        text.push_str(&format!("{sum} {json}\n"));
    }
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(audit_outbox::default_path(store))
        .unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
    keys
}

#[test]
fn audit_delivery_killed_mid_flush_loses_and_duplicates_nothing() {
    let mut pg = pg::Pg::start();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let su = new_site(&pg, dir);
    let cred = add_door(&pg, &su, dir, "a", "east");
    let (board, store) = door_board(dir, &pg, "a", &cred);
    assert!(
        facegate(&["sync", "--board", board.to_str().unwrap(), "--once"])
            .status
            .success()
    );
    const N: usize = 20_000;
    let keys = fill_outbox(&store, N);
    let desk = DbTarget::new(&pg.url("fleet"), Some(&pg.ca), Some(&su));
    let count = || -> usize {
        let mut c = db::connect(&desk).unwrap();
        let n: i64 = c
            .query_one("SELECT count(*) FROM fleet.audit", &[])
            .unwrap()
            .get(0);
        n as usize
    };
    // Two deliveries killed (SIGKILL) part-way: once a quarter, then half of the events are
    // in the table. Where each kill lands (mid-transaction, between the commit and the outbox
    // rewrite, mid-rewrite) is up to the scheduler; every case must end the same.
    let wait_for = |part: usize, daemon: &mut Daemon| {
        let t0 = Instant::now();
        while count() < part {
            assert!(t0.elapsed() < Duration::from_secs(120), "delivery stalled");
            assert!(daemon.0.try_wait().unwrap().is_none(), "sync died");
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    for part in [N / 4, N / 2] {
        let mut daemon = spawn_sync(&board);
        wait_for(part, &mut daemon);
        drop(daemon); // SIGKILL
        let left = outbox_keys(&store).len();
        eprintln!(
            "killed a delivery at {} rows in the table, {left} events left in the outbox",
            count()
        );
        assert!(
            count() + left >= N,
            "events lost: {} + {left} < {N}",
            count()
        );
    }
    // Then the database killed (SIGKILL of the server) under a running delivery: its rounds
    // fail, and once the server is back the same daemon delivers the rest.
    let mut daemon = spawn_sync(&board);
    wait_for(3 * N / 4, &mut daemon);
    pg.kill();
    let left = outbox_keys(&store).len();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(outbox_keys(&store).len() <= left);
    pg.resume();
    eprintln!(
        "killed the database at {} rows in the table, {left} events left in the outbox",
        count()
    );
    let t0 = Instant::now();
    while !outbox_keys(&store).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "never delivered the rest"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(daemon);
    let o = facegate(&["sync", "--board", board.to_str().unwrap(), "--once"]);
    assert!(o.status.success());
    let mut c = db::connect(&DbTarget::new(&pg.url("fleet"), Some(&pg.ca), Some(&su))).unwrap();
    let mut got: Vec<String> = c
        .query("SELECT event_key FROM fleet.audit", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    got.sort();
    let mut want = keys;
    want.sort();
    assert_eq!(got.len(), N);
    assert_eq!(got, want, "each event exactly once");
    assert!(outbox_keys(&store).is_empty());
}

/// A TCP relay to the database whose link can be cut: while cut, bytes in both directions are
/// read and dropped, so the door's packets are acknowledged but never answered (a hung
/// middlebox or server; a firewall that drops is the milder case TCP_USER_TIMEOUT catches).
struct Link {
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Link {
    fn to(upstream: u16) -> Link {
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::Ordering;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let c = cut.clone();
        std::thread::spawn(move || {
            for down in l.incoming() {
                let Ok(down) = down else { continue };
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (down.try_clone().unwrap(), up.try_clone().unwrap()),
                    (up, down),
                ] {
                    let c = c.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        loop {
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => {
                                    let _ = to.shutdown(std::net::Shutdown::Both);
                                    return;
                                }
                                Ok(n) if !c.load(Ordering::SeqCst) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        return;
                                    }
                                }
                                Ok(_) => {} // cut: dropped on the floor
                            }
                        }
                    });
                }
            }
        });
        Link { port, cut }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn a_door_cut_off_mid_sync_keeps_deciding_and_its_sync_restarts_and_catches_up() {
    let pg = pg::Pg::start();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let su = new_site(&pg, dir);
    let cred = add_door(&pg, &su, dir, "a", "east");
    enrol_at_the_desk(&pg, &su, dir);
    assert!(
        fleet(&pg, &su, &["grant", "--person", PERSON, "--group", "east"])
            .status
            .success()
    );

    // Door a reaches the database only through the link.
    let link = Link::to(pg.port);
    let (board, store) = door_board(dir, &pg, "a", &cred);
    let text = std::fs::read_to_string(&board)
        .unwrap()
        .replace(
            &pg.url("fleet"),
            &format!("postgres://127.0.0.1:{}/fleet", link.port),
        )
        .replace("[fleet]\n", "[fleet]\nround_timeout_s = 5\n");
    std::fs::write(&board, text).unwrap();
    let mut daemon = spawn_sync(&board);
    let t0 = Instant::now();
    while !store.exists() || users(&store) != vec![PERSON.to_string()] {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the first sync never came"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The link goes dead in the middle of the daemon's rounds (interval 1 s). The person is
    // revoked meanwhile: the door cannot know yet, and keeps deciding from its store.
    link.set_cut(true);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(fleet(
        &pg,
        &su,
        &["revoke", "--person", PERSON, "--reason", "test"]
    )
    .status
    .success());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(users(&store), vec![PERSON.to_string()]);
    assert_eq!(
        hamilton(&board).status.code(),
        Some(0),
        "deciding from the last store"
    );

    // A round blocked on the dead link: past round_timeout_s (5 s here) the daemon exits with
    // status 75 for its service to restart it (the PostgreSQL client cannot be interrupted).
    let st = loop {
        if let Some(st) = daemon.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "a hung round never ended"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(st.code(), Some(75), "{st}");
    assert_eq!(
        users(&store),
        vec![PERSON.to_string()],
        "nothing half-written"
    );
    assert_eq!(hamilton(&board).status.code(), Some(0), "still deciding");

    // The link returns; restarted (as `Restart=always` does), the door catches up and denies.
    link.set_cut(false);
    let t1 = Instant::now();
    daemon = spawn_sync(&board);
    while !users(&store).is_empty() {
        assert!(
            t1.elapsed() < Duration::from_secs(60),
            "the revocation never reached the door after the link returned"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "after the link returned, the revocation reached the door in {:.1} s",
        t1.elapsed().as_secs_f64()
    );
    // SAFETY: SIGTERM to our own child.
    unsafe { libc::kill(daemon.0.id() as i32, libc::SIGTERM) };
    assert!(daemon.0.wait().unwrap().success());
    assert_eq!(hamilton(&board).status.code(), Some(1));
}

fn spawn_sync(board: &Path) -> Daemon {
    Daemon(
        common::bin_command(env!("CARGO_BIN_EXE_facegate"))
            .args(["sync", "--board", board.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// A `facegate sync` child, killed if the test ends early (a failed assertion), so it never
/// outlives the test holding its stderr.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_door_clock_off_by_hours_neither_stretches_staleness_nor_a_grant() {
    let pg = pg::Pg::start();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let su = new_site(&pg, dir);
    let cred = add_door(&pg, &su, dir, "a", "east");
    enrol_at_the_desk(&pg, &su, dir);
    assert!(
        fleet(&pg, &su, &["grant", "--person", PERSON, "--group", "east"])
            .status
            .success()
    );
    let (board, _) = door_board(dir, &pg, "a", &cred);
    let b = board.to_str().unwrap();
    let sync_at = |offset: Option<&str>| facegate_at(offset, &["sync", "--board", b, "--once"]);
    assert!(sync_at(None).status.success());
    assert_eq!(hamilton(&board).status.code(), Some(0));

    // The door's clock jumps 2 h ahead: its last sync now looks 2 h old, past
    // max_staleness_s (600 s): everyone refused until a sync under that clock.
    let ahead = Some("+2h");
    let o = hamilton_at(ahead, &board);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("max_staleness_s"));
    assert!(sync_at(ahead).status.success());
    assert_eq!(hamilton_at(ahead, &board).status.code(), Some(0));
    // Its audit events carry its clock; the centre's received_at shows the skew.
    assert!(sync_at(ahead).status.success());
    let mut c = db::connect(&DbTarget::new(&pg.url("fleet"), Some(&pg.ca), Some(&su))).unwrap();
    let skew: f64 = c
        .query_one(
            "SELECT extract(epoch FROM decided_at - received_at)::float8 FROM fleet.audit
             WHERE decision = 'unlock' ORDER BY id DESC LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert!((6900.0..7500.0).contains(&skew), "skew {skew} s");

    // Set back to the true time, the last sync is dated 2 h in the future: not believed.
    let o = hamilton(&board);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("in the future"));
    assert!(sync_at(None).status.success());
    assert_eq!(hamilton(&board).status.code(), Some(0));

    // A grant starting in an hour by the centre's clock does not open a door whose clock is
    // 2 h ahead: validity is decided at the centre.
    assert!(fleet(
        &pg,
        &su,
        &["revoke", "--person", PERSON, "--reason", "test"]
    )
    .status
    .success());
    let from: String = c
        .query_one(
            "SELECT to_char((now() + interval '1 hour') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(fleet(
        &pg,
        &su,
        &["grant", "--person", PERSON, "--group", "east", "--from", &from]
    )
    .status
    .success());
    assert!(sync_at(ahead).status.success());
    let o = hamilton_at(ahead, &board);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a grant not yet valid at the centre"
    );
    assert_eq!(unlocked(&o), 0);
}

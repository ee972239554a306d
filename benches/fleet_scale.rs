//! Fleet at building scale, measured (issue #16): D doors, P people × T templates (512-d) all
//! granted to every door (the worst case: every door pulls everything), on a throwaway
//! PostgreSQL cluster on this machine (tests/pg, TLS on).
//!
//!   cargo bench --bench fleet_scale                      # 50 doors, 5,000 people × 5
//!   FLEET_DOORS=5 FLEET_PEOPLE=200 cargo bench --bench fleet_scale
//!
//! Prints: the initial sync per door (time, embedding bytes pulled, store file size), an
//! unchanged round, every door's round after one revocation (the revocation reaches a door
//! within its sync interval plus that round, pulling no embedding), and the audit: a door's
//! append of one event to its outbox, and the throughput of every door's delivery, then of the
//! same events re-sent. The doors run one after another
//! (2 cores here), so per-door figures are what one door sees with the server otherwise idle.
//! Timing is reported, never asserted.

#[path = "../tests/pg/mod.rs"]
mod pg;

use std::path::Path;
use std::time::{Duration, Instant};

use facegate::fleet::admin;
use facegate::fleet::db::{self, Credentials, DbTarget};
use facegate::fleet::{audit, migrate, sync};
use facegate::unlock::app::StoreFiles;
use facegate::unlock::audit_outbox::{Draft, Outbox};

const MODEL: &str = "sha256:fleet-scale-bench";
const DIM: usize = 512;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A deterministic pseudo-random unit vector (xorshift), as little-endian bytes.
fn template(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v: Vec<f32> = (0..DIM)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.iter_mut().for_each(|a| *a /= n);
    admin::embedding_bytes(&v)
}

fn stats(name: &str, v: &mut [Duration]) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let total: Duration = v.iter().sum();
    println!(
        "{name}: n={} median {:.0} ms, p90 {:.0} ms, max {:.0} ms, total {:.1} s",
        v.len(),
        ms(v[v.len() / 2]),
        ms(v[(v.len() * 9 / 10).min(v.len() - 1)]),
        ms(v[v.len() - 1]),
        total.as_secs_f64()
    );
}

fn dir_bytes(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing useful here.
    let doors = env_or("FLEET_DOORS", 50);
    let people = env_or("FLEET_PEOPLE", 5000);
    let per = env_or("FLEET_TEMPLATES", 5);
    let events = env_or("FLEET_AUDIT_PER_DOOR", 200);
    println!("fleet scale: {doors} doors, {people} people × {per} templates of {DIM}-d, all granted to every door");

    let pg = pg::Pg::start();
    let tmp = tempfile::tempdir().unwrap();
    let su = tmp.path().join("su.cred");
    Credentials::create(&su, pg::SUPERUSER, &pg.password).unwrap();
    let target =
        |dbname: &str, cred: &Path| DbTarget::new(&pg.url(dbname), Some(&pg.ca), Some(cred));
    db::connect(&target("postgres", &su))
        .unwrap()
        .batch_execute("CREATE DATABASE fleet")
        .unwrap();
    let mut c = db::connect(&target("fleet", &su)).unwrap();
    migrate::migrate(&mut c).unwrap();

    // Population, in bulk (unnest of arrays, 1,000 rows a statement).
    let t = Instant::now();
    let names: Vec<String> = (0..people).map(|i| format!("p{i:05}")).collect();
    c.execute(
        "INSERT INTO fleet.people (name) SELECT unnest($1::text[])",
        &[&names],
    )
    .unwrap();
    let ids: Vec<i64> = c
        .query("SELECT id FROM fleet.people ORDER BY name", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut pid = Vec::new();
    let mut emb = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        for k in 0..per {
            pid.push(*id);
            emb.push(template((i * per + k) as u64));
            if pid.len() == 1000 {
                c.execute(
                    "INSERT INTO fleet.templates (person_id, model_id, dim, embedding)
                     SELECT p, $2, $3, e FROM unnest($1::bigint[], $4::bytea[]) AS x(p, e)",
                    &[&pid, &MODEL, &(DIM as i32), &emb],
                )
                .unwrap();
                pid.clear();
                emb.clear();
            }
        }
    }
    if !pid.is_empty() {
        c.execute(
            "INSERT INTO fleet.templates (person_id, model_id, dim, embedding)
             SELECT p, $2, $3, e FROM unnest($1::bigint[], $4::bytea[]) AS x(p, e)",
            &[&pid, &MODEL, &(DIM as i32), &emb],
        )
        .unwrap();
    }
    admin::ensure_group(&mut c, "all").unwrap();
    c.execute(
        "INSERT INTO fleet.grants (person_id, group_id)
         SELECT p.id, g.id FROM fleet.people p, fleet.door_groups g WHERE g.name = 'all'",
        &[],
    )
    .unwrap();
    let mut creds = Vec::new();
    for d in 0..doors {
        let pw = admin::new_password().unwrap();
        let role = admin::add_door(&mut c, &format!("d{d:03}"), &["all".into()], &pw).unwrap();
        let p = tmp.path().join(format!("d{d:03}.cred"));
        Credentials::create(&p, &role, &pw).unwrap();
        creds.push(p);
    }
    println!(
        "populated in {:.1} s ({} templates)",
        t.elapsed().as_secs_f64(),
        people * per
    );

    // Initial sync of every door, then one unchanged round each. The stores stay for the
    // revocation round (50 doors × 5,000 × 5 take ~2.6 GB of disk under the temp folder).
    let (mut initial, mut unchanged, mut rounds_after) = (Vec::new(), Vec::new(), Vec::new());
    let (mut pulled, mut file) = (0u64, 0u64);
    let mut conns = Vec::new();
    for (d, cred) in creds.iter().enumerate() {
        let mut dc = db::connect(&target("fleet", cred)).unwrap();
        let dir = tmp.path().join(format!("store{d}"));
        let files = StoreFiles::beside(&dir.join("templates.fgt"));
        let o = sync::sync_once(&mut dc, &files, MODEL, DIM).unwrap();
        assert!(o.changed && o.templates as usize == people * per);
        initial.push(o.elapsed);
        pulled = o.bytes;
        file = dir_bytes(&files.store);
        let o = sync::sync_once(&mut dc, &files, MODEL, DIM).unwrap();
        assert!(!o.changed);
        unchanged.push(o.elapsed);
        conns.push(dc);
    }
    stats("initial sync per door", &mut initial);
    println!(
        "  per door: {:.1} MB of embeddings pulled, store file {:.1} MB",
        pulled as f64 / 1e6,
        file as f64 / 1e6
    );
    stats(
        "unchanged round per door (the cost of each interval)",
        &mut unchanged,
    );

    // One revocation; every door's next round: the list of what it may hold, no embedding.
    let t0 = Instant::now();
    let mut revoked_bytes = 0u64;
    admin::revoke(&mut c, "p00000", None, "bench").unwrap();
    for (d, dc) in conns.iter_mut().enumerate() {
        let dir = tmp.path().join(format!("store{d}"));
        let files = StoreFiles::beside(&dir.join("templates.fgt"));
        let o = sync::sync_once(dc, &files, MODEL, DIM).unwrap();
        assert_eq!(o.people as usize, people - 1);
        rounds_after.push(o.elapsed);
        revoked_bytes += o.bytes;
        std::fs::remove_dir_all(&dir).unwrap();
    }
    stats("round after one revocation, per door", &mut rounds_after);
    println!("  embedding bytes pulled by all {doors} doors for it: {revoked_bytes}");
    println!(
        "  all {doors} doors, one after another, had the revocation {:.1} s after it (doors polling in parallel: within sync_interval_s + one round)",
        t0.elapsed().as_secs_f64()
    );

    // Audit, the doors' real path: each door's loop appends its events to its outbox (one
    // fsync each), then its sync delivers the outbox (`fleet::audit::deliver`, batches of
    // 1,000 in one transaction). Then the same events once more, as after a reply lost in an
    // outage: nothing is duplicated.
    let mut appends = Vec::new();
    let mut copies = Vec::new();
    for d in 0..doors {
        let path = tmp.path().join(format!("outbox{d}"));
        let mut o = Outbox::new(&path).unwrap();
        for e in 0..events {
            let t = Instant::now();
            o.append(Draft {
                person: Some(format!("p{:05}", e % people)),
                decision: "unlock".into(),
                score: Some(0.8),
                live: Some(0.9),
                reason: String::new(),
            })
            .unwrap();
            appends.push(t.elapsed());
        }
        let copy = tmp.path().join(format!("outbox{d}.copy"));
        std::fs::copy(&path, &copy).unwrap();
        copies.push((path, copy));
    }
    stats(
        "door: one event appended to the outbox (fsync)",
        &mut appends,
    );
    for pass in ["first delivery", "re-sent"] {
        let t = Instant::now();
        let (mut sent, mut new_rows) = (0usize, 0u64);
        for (dc, (path, copy)) in conns.iter_mut().zip(&copies) {
            if pass == "re-sent" {
                std::fs::copy(copy, path).unwrap();
            }
            let r = audit::deliver(dc, path).unwrap();
            sent += r.sent;
            new_rows += r.new_rows;
        }
        println!(
            "audit {pass}: {sent} events from {doors} doors in {:.2} s = {:.0} events/s, {new_rows} rows inserted",
            t.elapsed().as_secs_f64(),
            sent as f64 / t.elapsed().as_secs_f64()
        );
    }
    let total: i64 = c
        .query_one("SELECT count(*) FROM fleet.audit", &[])
        .unwrap()
        .get(0);
    println!("audit table: {total} rows (each event once)");
}

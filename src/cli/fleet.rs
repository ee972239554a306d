//! `facegate fleet …`: the desk's commands on the fleet database (migrate, enrol, doors,
//! grants, revocations, people, audit). Argument parsing and printing only; the work is in
//! `crate::fleet`, so the tests call the same functions.
//!
//! Why flags and not a config file for the desk: the desk is a person at a terminal; the URL,
//! the CA and the credentials file are named on each command (or in the environment
//! variables below, for a shell session), while the password itself stays in its 0600 file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::cli::out::{logln, outln};
use crate::cli::unlock::{capture_templates, enrolment_models, BoardArg};
use crate::fleet::db::{self, Credentials, DbTarget};
use crate::fleet::{admin, migrate};

/// Where the fleet database is.
#[derive(Args, Debug, Clone)]
pub struct DbArgs {
    /// The database: postgres://HOST[:PORT]/DBNAME (TLS over TCP; no password here).
    #[arg(long, env = "FACEGATE_DB")]
    pub db: String,
    /// The CA certificate (PEM) the server's certificate must chain to (required over TCP).
    #[arg(long, env = "FACEGATE_DB_CA")]
    pub ca: Option<PathBuf>,
    /// A 0600 file with `user = "…"` and `password = "…"`.
    #[arg(long, env = "FACEGATE_DB_CREDENTIALS")]
    pub credentials: Option<PathBuf>,
}

impl DbArgs {
    pub fn target(&self) -> DbTarget {
        DbTarget::new(&self.db, self.ca.as_deref(), self.credentials.as_deref())
    }

    /// Connects and checks the schema version (any command but `migrate`).
    fn connect(&self) -> Result<postgres::Client> {
        let mut c = db::connect(&self.target())?;
        migrate::require_current(&mut c)?;
        Ok(c)
    }
}

#[derive(Args, Debug, Clone)]
pub struct FleetArgs {
    #[command(subcommand)]
    pub action: FleetAction,
}

#[derive(Subcommand, Debug, Clone)]
pub enum FleetAction {
    /// Create or upgrade the fleet schema and roles (idempotent); needs a role that may
    /// create schemas and roles.
    Migrate {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Enrol a person at the desk: the board's models and quality gates, as `enroll` on a
    /// door; the templates are stored for the board's recogniser file.
    Enroll(FleetEnrollArgs),
    /// Add a door (its login role and groups); writes its credentials to a new 0600 file.
    AddDoor {
        #[command(flatten)]
        db: DbArgs,
        /// Door name (a-z, 0-9, `_`).
        name: String,
        /// Door groups the door belongs to (created when new); repeatable.
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Where to write the door's credentials (must not exist); copy it to the board.
        #[arg(long)]
        credentials_out: PathBuf,
    },
    /// Put a door into a door group (created when new).
    Join {
        #[command(flatten)]
        db: DbArgs,
        door: String,
        group: String,
    },
    /// Let a person through the doors of a group, optionally within a period.
    Grant {
        #[command(flatten)]
        db: DbArgs,
        #[arg(long)]
        person: String,
        #[arg(long)]
        group: String,
        /// Start (ISO 8601 with a zone, e.g. 2027-01-01T08:00:00Z; default now).
        #[arg(long)]
        from: Option<String>,
        /// End (exclusive; default open-ended).
        #[arg(long)]
        until: Option<String>,
    },
    /// Revoke a person's grants: for one group, or every door.
    Revoke {
        #[command(flatten)]
        db: DbArgs,
        #[arg(long)]
        person: String,
        /// Only this door group (default: every door).
        #[arg(long)]
        group: Option<String>,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// List the doors and their groups.
    Doors {
        #[command(flatten)]
        db: DbArgs,
    },
    /// List the people, their templates per recogniser and the groups granted now.
    People {
        #[command(flatten)]
        db: DbArgs,
    },
    /// The latest audit rows (one door's with --door), oldest first.
    Audit {
        #[command(flatten)]
        db: DbArgs,
        #[arg(long)]
        door: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

#[derive(Args, Debug, Clone)]
pub struct FleetEnrollArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// The desk's board profile: its models, threshold file and enrolment gates.
    #[command(flatten)]
    pub board: BoardArg,
    /// Person name (letters, digits, `_ - .`).
    #[arg(long)]
    pub person: String,
    /// Where the faces come from: v4l2:/dev/videoN, image:FILE, images:DIR, mjpeg:PATH,
    /// yuyv:PATH@WxH (default: the board's camera).
    #[arg(long)]
    pub source: Option<String>,
    /// Frames to keep (default: the board's enroll.frames).
    #[arg(long)]
    pub frames: Option<usize>,
    /// Add to the person's templates of this recogniser instead of replacing them.
    #[arg(long)]
    pub append: bool,
}

/// `facegate fleet enroll`
pub fn enroll(args: &FleetEnrollArgs) -> Result<ExitCode> {
    let b = args.board.load()?;
    crate::unlock::store::validate_user_name(&args.person)?;
    // Reach the database before the camera: a desk that cannot store is told at once.
    let mut client = args.db.connect()?;
    let models = enrolment_models(&b)?;
    let templates = capture_templates(&b, &models, &args.person, &args.source, args.frames)?;
    let stored = admin::enrol_templates(
        &mut client,
        &args.person,
        &models.recognizer_id,
        models.dim,
        &templates,
        !args.append,
    )?;
    logln!(
        "enrolled {} with {} template(s) for recogniser {} ({stored} stored for it) in {}",
        args.person,
        templates.len(),
        models.recognizer_id,
        args.db.target().display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `facegate fleet …`
pub fn fleet(args: &FleetArgs) -> Result<ExitCode> {
    match &args.action {
        FleetAction::Migrate { db } => {
            let mut c = db::connect(&db.target())?;
            let r = migrate::migrate(&mut c)?;
            if r.applied.is_empty() {
                outln!("fleet schema at version {}: nothing to do", r.version);
            } else {
                outln!(
                    "fleet schema at version {}: applied {:?}",
                    r.version,
                    r.applied
                );
            }
        }
        FleetAction::Enroll(a) => return enroll(a),
        FleetAction::AddDoor {
            db,
            name,
            groups,
            credentials_out,
        } => {
            // The credentials file first (a new 0600 file; an existing one is refused), so a
            // door never exists in the database with a password nobody kept.
            let password = admin::new_password()?;
            let role = admin::door_role(name);
            admin::validate_door_name(name)?;
            Credentials::create(credentials_out, &role, &password)?;
            let added = db
                .connect()
                .and_then(|mut c| Ok(admin::add_door(&mut c, name, groups, &password)?));
            if let Err(e) = added {
                let _ = std::fs::remove_file(credentials_out);
                return Err(e);
            }
            outln!(
                "door {name} (role {role}) in {}; credentials in {} (0600): copy them to the board",
                if groups.is_empty() {
                    "no group yet".to_string()
                } else {
                    format!("group(s) {}", groups.join(", "))
                },
                credentials_out.display()
            );
        }
        FleetAction::Join { db, door, group } => {
            admin::add_door_to_group(&mut db.connect()?, door, group)?;
            outln!("door {door} is in group {group}");
        }
        FleetAction::Grant {
            db,
            person,
            group,
            from,
            until,
        } => {
            admin::grant(
                &mut db.connect()?,
                person,
                group,
                from.as_deref(),
                until.as_deref(),
            )?;
            outln!(
                "granted {person} the doors of {group} from {} until {}",
                from.as_deref().unwrap_or("now"),
                until.as_deref().unwrap_or("revoked")
            );
        }
        FleetAction::Revoke {
            db,
            person,
            group,
            reason,
        } => {
            let change = admin::revoke(&mut db.connect()?, person, group.as_deref(), reason)?;
            outln!(
                "revoked {person} at {} (change {change}): each door denies them from its next sync",
                group
                    .as_deref()
                    .map_or("every door".to_string(), |g| format!("the doors of {g}"))
            );
        }
        FleetAction::Doors { db } => {
            for d in admin::doors(&mut db.connect()?)? {
                outln!("{}\t{}\t{}", d.name, d.role, d.groups.join(","));
            }
        }
        FleetAction::People { db } => {
            for p in admin::people(&mut db.connect()?)? {
                let t: Vec<String> = p
                    .templates
                    .iter()
                    .map(|(m, n)| format!("{n}×{m}"))
                    .collect();
                outln!("{}\t{}\t{}", p.name, t.join(","), p.groups.join(","));
            }
        }
        FleetAction::Audit { db, door, limit } => {
            for r in admin::audit(&mut db.connect()?, door.as_deref(), *limit)? {
                let f = |x: Option<f32>| x.map_or("-".to_string(), |v| format!("{v:.4}"));
                outln!(
                    "{}\t{}\t{}\t{}\t{}\t{}\tscore {}\tlive {}\t{}\treceived {}",
                    r.id,
                    r.decided_at,
                    r.door,
                    r.decision,
                    r.person.as_deref().unwrap_or("-"),
                    r.event_key,
                    f(r.score),
                    f(r.live_score),
                    r.reason,
                    r.received_at
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug, Clone)]
pub struct SyncArgs {
    /// The door's board profile: its `[fleet]` table, recogniser and store.
    #[command(flatten)]
    pub board: BoardArg,
    /// One round, then exit (non-zero when it failed); default: every sync_interval_s until
    /// SIGTERM.
    #[arg(long)]
    pub once: bool,
    /// Template store (default: the board's store.path).
    #[arg(long)]
    pub store: Option<PathBuf>,
}

/// `facegate sync`: keeps the door's store equal to its view of the fleet database and
/// delivers the door's audit outbox.
pub fn sync(args: &SyncArgs) -> Result<ExitCode> {
    let b = args.board.load()?;
    let Some(f) = b.fleet.clone() else {
        anyhow::bail!(
            "{}: no [fleet] table: this board is not a fleet door (see README, Fleet)",
            args.board.board.display()
        );
    };
    // The recogniser's identity exactly as the unlock loop computes it (digest, precision):
    // only templates made by that file are pulled.
    let models = crate::unlock::app::load_board_models(&b, Some(1), false)?;
    let files = crate::unlock::app::StoreFiles::for_board(&b, args.store.as_deref());
    let outbox = crate::unlock::audit_outbox::default_path(&files.store);
    let interval = std::time::Duration::from_secs(f.sync_interval_s);
    let mut target = DbTarget::new(&f.db, Some(&f.ca), Some(&f.credentials));
    // A round must give up well within the interval when the network is gone.
    target.timeout = interval.clamp(
        std::time::Duration::from_secs(2),
        std::time::Duration::from_secs(10),
    );
    let stop = crate::unlock::session::stop_flag()?;
    let watchdog = RoundWatchdog::start(std::time::Duration::from_secs(f.round_timeout_s));
    let mut client: Option<postgres::Client> = None;
    let mut failing = false;
    loop {
        let running = watchdog.round();
        let round = (|| -> crate::error::Result<(
            crate::fleet::sync::SyncOutcome,
            crate::fleet::audit::Delivered,
        )> {
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                let mut c = db::connect(&target)?;
                migrate::require_current(&mut c)?;
                client = Some(c);
            }
            let c = client.as_mut().expect("connected");
            let synced =
                crate::fleet::sync::sync_once(c, &files, &models.recognizer_id, models.dim);
            // The audit goes out even when the store could not be synced: a bad template row
            // must not hold the door's events back.
            let delivered = crate::fleet::audit::deliver(c, &outbox);
            Ok((synced?, delivered?))
        })();
        drop(running);
        match round {
            Ok((o, sent)) => {
                for d in &sent.dropped {
                    logln!("audit outbox {}: dropped {d}", outbox.display());
                }
                if sent.sent > 0 {
                    logln!(
                        "audit: {} event(s) delivered, {} new to the database",
                        sent.sent,
                        sent.new_rows
                    );
                }
                if o.changed || failing || args.once {
                    logln!(
                        "sync: change {}: {} people, {} templates{} in {:.0} ms",
                        o.change_no,
                        o.people,
                        o.templates,
                        if o.changed {
                            format!(", store rewritten ({} bytes of templates)", o.bytes)
                        } else {
                            ", unchanged".to_string()
                        },
                        o.elapsed.as_secs_f64() * 1e3
                    );
                }
                failing = false;
            }
            Err(e) => {
                // The store in place stays; the loop keeps deciding from it until it is older
                // than max_staleness_s. A new connection next round.
                client = None;
                if args.once {
                    return Err(e.into());
                }
                logln!("sync failed (the last good store stays in use): {e}");
                failing = true;
            }
        }
        if args.once {
            return Ok(ExitCode::SUCCESS);
        }
        let until = std::time::Instant::now() + interval;
        while std::time::Instant::now() < until {
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                return Ok(ExitCode::SUCCESS);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// Exit status of a `facegate sync` whose round hung (EX_TEMPFAIL: try again).
pub const EXIT_ROUND_HUNG: i32 = 75;

/// Ends the process when one sync round runs longer than `[fleet].round_timeout_s`.
///
/// Why exit: the PostgreSQL client blocks without a deadline when the peer acknowledges but
/// never answers (a stalled server, a link that swallows packets: TCP's own timeouts only
/// catch unacknowledged data), and a blocked call cannot be cancelled from outside. A round
/// abandoned on a thread could wake later and write an older view over a newer one. Exiting
/// is safe because every file the round writes is replaced atomically (the same property the
/// kill tests check), and the service restarts it (`Restart=always`).
struct RoundWatchdog {
    /// Milliseconds since `t0` when the running round started; 0 between rounds.
    started_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    t0: std::time::Instant,
}

/// Marks a round as running until dropped.
struct RoundGuard<'a>(&'a RoundWatchdog);

impl RoundWatchdog {
    fn start(timeout: std::time::Duration) -> RoundWatchdog {
        use std::sync::atomic::Ordering;
        let started_ms = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let t0 = std::time::Instant::now();
        let s = started_ms.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_millis(250));
            let at = s.load(Ordering::SeqCst);
            let now = t0.elapsed().as_millis() as u64;
            if at != 0 && now.saturating_sub(at) > timeout.as_millis() as u64 {
                eprintln!(
                    "sync: a round has run for {:.0} s, more than round_timeout_s = {}: the database or the link stopped answering; exiting (status {EXIT_ROUND_HUNG}) for a fresh start, the last good store stays in use",
                    (now - at) as f64 / 1e3,
                    timeout.as_secs()
                );
                std::process::exit(EXIT_ROUND_HUNG);
            }
        });
        RoundWatchdog { started_ms, t0 }
    }

    fn round(&self) -> RoundGuard<'_> {
        let now = (self.t0.elapsed().as_millis() as u64).max(1);
        self.started_ms
            .store(now, std::sync::atomic::Ordering::SeqCst);
        RoundGuard(self)
    }
}

impl Drop for RoundGuard<'_> {
    fn drop(&mut self) {
        self.0
            .started_ms
            .store(0, std::sync::atomic::Ordering::SeqCst);
    }
}

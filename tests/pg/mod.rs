//! A throwaway PostgreSQL server for the fleet tests: its own `initdb` cluster on a free
//! 127.0.0.1 port with TLS on (a CA and a server certificate made by `openssl`), password
//! (SCRAM) logins only over TLS, torn down when the value is dropped.
//!
//! Why a real server and not a mock: what the fleet rests on (row-level security, grants,
//! append-only audit, transactions) is the server's behaviour, which only the server can show.
//! Why one cluster per test: roles are cluster-wide, so two tests creating the door role
//! `facegate_door_a` would collide in a shared cluster, and the fault tests stop and restart
//! their server. `initdb` + start takes ~1-2 s.
//!
//! Finding the binaries: `FACEGATE_PG_BIN` (a folder), else `initdb` on `PATH`, else Debian's
//! `/usr/lib/postgresql/<highest>/bin` (Debian does not put `initdb` on `PATH`). None found is
//! a test failure saying what to install, never a skip.
//!
//! PostgreSQL refuses to run as root (CI runs as root): then the server runs as the `postgres`
//! user (Debian's package creates it; else `nobody`) in a folder under the system temp folder
//! that it owns, since the project folder's parents may not be open to it. Otherwise the
//! cluster lives under `target/tmp/pg`. A test process that dies without unwinding leaves a
//! folder behind: the server gets SIGKILL from the kernel when the test thread that started
//! it ends (`PR_SET_PDEATHSIG`), and the next run removes folders whose test process is gone.
#![allow(dead_code)]

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const INSTALL_HINT: &str = "PostgreSQL's server binaries (initdb, postgres, pg_ctl) were not \
     found: install them (`apt-get install postgresql` on Debian; .ci/run does) or set \
     FACEGATE_PG_BIN to the folder holding them";

/// The superuser's name in every test cluster.
pub const SUPERUSER: &str = "postgres";

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A running (or stopped) throwaway cluster.
pub struct Pg {
    bin: PathBuf,
    /// The cluster's folder: `data/`, the certificates, the server log.
    dir: PathBuf,
    pub port: u16,
    /// The superuser's password.
    pub password: String,
    /// The CA certificate the server's certificate is signed by (PEM), for the client.
    pub ca: PathBuf,
    child: Option<Child>,
    run_as: Option<(u32, u32)>,
}

fn pg_bin() -> PathBuf {
    if let Some(d) = std::env::var_os("FACEGATE_PG_BIN") {
        let d = PathBuf::from(d);
        assert!(
            d.join("initdb").is_file(),
            "FACEGATE_PG_BIN={}: no initdb there. {INSTALL_HINT}",
            d.display()
        );
        return d;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if d.join("initdb").is_file() && d.join("postgres").is_file() {
                return d;
            }
        }
    }
    // Debian: /usr/lib/postgresql/<major>/bin, the highest major.
    let mut best: Option<(u32, PathBuf)> = None;
    if let Ok(rd) = fs::read_dir("/usr/lib/postgresql") {
        for e in rd.flatten() {
            let major = e.file_name().to_string_lossy().parse::<u32>().ok();
            let bin = e.path().join("bin");
            if let Some(m) = major.filter(|_| bin.join("initdb").is_file()) {
                if best.as_ref().is_none_or(|(b, _)| m > *b) {
                    best = Some((m, bin));
                }
            }
        }
    }
    best.map(|(_, b)| b)
        .unwrap_or_else(|| panic!("{INSTALL_HINT}"))
}

/// uid and gid of `name` from /etc/passwd.
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding a free local port");
    l.local_addr().unwrap().port()
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes the cluster folders of test processes that are gone (killed without unwinding),
/// after killing a server still running there.
fn clean_stale(base: &Path) {
    let Ok(rd) = fs::read_dir(base) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(owner) = name.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if process_alive(owner) {
            continue;
        }
        let pidfile = e.path().join("data/postmaster.pid");
        if let Some(pid) = fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
        {
            // SAFETY: kill has no memory preconditions; a wrong pid fails harmlessly.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = fs::remove_dir_all(e.path());
    }
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn chown(path: &Path, ids: Option<(u32, u32)>) {
    if let Some((u, g)) = ids {
        std::os::unix::fs::chown(path, Some(u), Some(g))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

impl Pg {
    /// Makes and starts a new cluster. Panics (fails the test) with what to install when
    /// PostgreSQL is missing.
    pub fn start() -> Pg {
        let bin = pg_bin();
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let run_as = if root {
            Some(
                lookup_user("postgres")
                    .or_else(|| lookup_user("nobody"))
                    .expect("running as root, and neither a postgres nor a nobody user exists to run the server as"),
            )
        } else {
            None
        };
        let base = if root {
            std::env::temp_dir().join("facegate-pg")
        } else {
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pg")
        };
        fs::create_dir_all(&base).unwrap();
        if root {
            fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).unwrap();
        }
        clean_stale(&base);
        let dir = base.join(format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        chown(&dir, run_as);

        let password = format!("pw{:016x}", rand_u64());
        let pwfile = dir.join("pwfile");
        fs::write(&pwfile, &password).unwrap();
        chown(&pwfile, run_as);
        let data = dir.join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["--encoding=UTF8", "--locale=C", "--no-sync"]);
        as_user(&mut initdb, run_as);
        run(&mut initdb, "initdb");
        fs::remove_file(&pwfile).unwrap();
        // Logins only over TLS, with a password: the transport the doors use.
        fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 scram-sha-256\n\
             hostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        let ca = make_certs(&dir, run_as);
        let mut pg = Pg {
            bin,
            dir,
            port: free_port(),
            password,
            ca,
            child: None,
            run_as,
        };
        pg.resume();
        pg
    }

    /// Starts the (stopped) server again, same folder and port.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "the test server is already running");
        let log = fs::File::create(self.dir.join("server.log")).unwrap();
        chown(&self.dir.join("server.log"), self.run_as);
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.display()))
            .args(["-c", "ssl=on"])
            .arg("-c")
            .arg(format!(
                "ssl_cert_file={}",
                self.dir.join("server.crt").display()
            ))
            .arg("-c")
            .arg(format!(
                "ssl_key_file={}",
                self.dir.join("server.key").display()
            ))
            // A test server: durability is not what is tested, speed of setup is.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "shared_buffers=16MB"])
            .args(["-c", "max_connections=120"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        as_user(&mut cmd, self.run_as);
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("starting postgres");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let t0 = Instant::now();
        let pidfile = self.dir.join("data/postmaster.pid");
        loop {
            // Line 1 of postmaster.pid is the server's pid, line 8 its status ("ready" once
            // it accepts). The pid must be this child's: a killed server leaves its file,
            // still saying "ready".
            let pid = self.child.as_ref().unwrap().id().to_string();
            if fs::read_to_string(&pidfile).ok().is_some_and(|s| {
                s.lines().next().is_some_and(|l| l.trim() == pid)
                    && s.lines().nth(7).is_some_and(|l| l.trim() == "ready")
            }) {
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "the test postgres exited ({st}) before it was ready: {}",
                    self.log_tail()
                );
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "the test postgres was not ready within 60 s: {}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of the server's log (for failure messages).
    pub fn log_tail(&self) -> String {
        let s = fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(15)..].join(" | ")
    }

    /// `postgres://127.0.0.1:PORT/DB` (TLS on; the password comes from a credentials file).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://127.0.0.1:{}/{db}", self.port)
    }

    /// Writes a 0600 credentials file (`user`, `password`) in `dir` and returns its path.
    pub fn credentials(&self, dir: &Path, user: &str, password: &str) -> PathBuf {
        let p = dir.join(format!("{user}.cred"));
        fs::write(
            &p,
            format!("user = \"{user}\"\npassword = \"{password}\"\n"),
        )
        .unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    /// The superuser's credentials file in `dir`.
    pub fn superuser_credentials(&self, dir: &Path) -> PathBuf {
        self.credentials(dir, SUPERUSER, &self.password)
    }

    /// The folder of the cluster's unix socket (trust logins: set-up without TLS).
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the server the fast way (clients disconnected, clean shutdown).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
            let _ = c.wait();
        }
    }

    /// Kills the server outright (SIGKILL of the postmaster: a crash, for fault tests).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            // Backends notice their postmaster is gone and exit; wait for the pid file's
            // owner to go so that a restart does not find the old server's shared memory.
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill on our own child's pid. SIGQUIT: immediate shutdown, the data is
            // thrown away anyway.
            unsafe { libc::kill(c.id() as i32, libc::SIGQUIT) };
            let _ = c.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn as_user(cmd: &mut Command, ids: Option<(u32, u32)>) {
    if let Some((u, g)) = ids {
        // std drops root's supplementary groups itself when it changes the uid from root.
        cmd.uid(u).gid(g);
    }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    u64::from_le_bytes(b)
}

/// A CA and a server certificate for 127.0.0.1/localhost signed by it (a self-signed leaf is
/// refused by webpki as "CA used as end entity", so two certificates). Returns the CA's path.
fn make_certs(dir: &Path, run_as: Option<(u32, u32)>) -> PathBuf {
    let ossl = |args: &[&str], what: &str| {
        let mut c = Command::new("openssl");
        c.args(args).current_dir(dir);
        let out = c.output().unwrap_or_else(|e| {
            panic!("{what}: cannot run openssl ({e}): install it (`apt-get install openssl`)")
        });
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut a = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=facegate test CA",
    ];
    a.extend(ec);
    a.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
    ossl(&a, "making the test CA");
    let mut a = vec!["req", "-subj", "/CN=localhost"];
    a.extend(ec);
    a.extend(["-keyout", "server.key", "-out", "server.csr"]);
    ossl(&a, "making the server key");
    fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    ossl(
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ],
        "signing the server certificate",
    );
    for f in ["server.key", "server.crt"] {
        let p = dir.join(f);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        chown(&p, run_as);
    }
    dir.join("ca.crt")
}

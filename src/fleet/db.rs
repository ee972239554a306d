//! Connecting to the fleet database: the URL, a 0600 credentials file, TLS.
//!
//! Why so strict: a door's database password is the key to its people's templates. So it
//! never sits in a board profile or on a command line (visible in `ps`), only in a file that
//! [`Credentials::load`] refuses unless it is private to the running user (the same check as
//! the template store, `securefs::read_private`). Every TCP connection is TLS, verified
//! against the CA certificate the board or the desk names (no system trust store: a door
//! trusts its own centre, not every public CA), with rustls and the ring provider so no
//! OpenSSL is linked; `sslmode=disable` over TCP is refused rather than honoured. Only a unix
//! socket (a database on the same machine) goes without TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use postgres::config::{Host, SslMode};
use postgres::{Client, Config, NoTls};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::error::{Error, Result};
use crate::unlock::securefs;

/// Largest credentials file read.
const MAX_CREDENTIALS_BYTES: u64 = 4096;

/// A login: the role and its password, from a private file.
#[derive(Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password (errors and logs may be shipped off the board).
        write!(f, "Credentials {{ user: {:?} }}", self.user)
    }
}

impl Credentials {
    /// Reads `user = "…"` and `password = "…"` (TOML) from a file that must be a regular
    /// file owned by this user and not readable or writable by others.
    pub fn load(path: &Path) -> Result<Credentials> {
        let bad = |r: String| Error::Msg(format!("credentials file {}: {r}", path.display()));
        let (bytes, _) = securefs::read_private(path, MAX_CREDENTIALS_BYTES).map_err(bad)?;
        let text = String::from_utf8(bytes).map_err(|_| bad("is not UTF-8".into()))?;
        let c: Credentials = toml::from_str(&text).map_err(|e| {
            bad(format!(
                "not `user = \"…\"` and `password = \"…\"`: {}",
                one_line(&e.to_string())
            ))
        })?;
        if c.user.is_empty() || c.password.is_empty() {
            return Err(bad("user and password must not be empty".into()));
        }
        Ok(c)
    }

    /// Writes a new private (0600) credentials file; refuses to replace an existing one.
    pub fn create(path: &Path, user: &str, password: &str) -> Result<()> {
        let text = format!("user = {user:?}\npassword = {password:?}\n");
        securefs::create_new_private(path, text.as_bytes())
            .map_err(|r| Error::Msg(format!("credentials file {}: {r}", path.display())))
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct DbTarget {
    /// `postgres://host[:port]/dbname` (or `host=… dbname=…`); a password in it is refused.
    pub url: String,
    /// The CA certificate(s) (PEM) the server's certificate must chain to; required for TCP.
    pub ca: Option<PathBuf>,
    /// The 0600 credentials file (else the URL's user, with no password).
    pub credentials: Option<PathBuf>,
    /// Bound on connecting (and on an unanswered write, via TCP_USER_TIMEOUT): a door must
    /// get back to deciding when the network is gone.
    pub timeout: Duration,
}

impl DbTarget {
    pub fn new(url: &str, ca: Option<&Path>, credentials: Option<&Path>) -> DbTarget {
        DbTarget {
            url: url.to_string(),
            ca: ca.map(Path::to_path_buf),
            credentials: credentials.map(Path::to_path_buf),
            timeout: Duration::from_secs(10),
        }
    }

    /// The URL without anything secret, for messages.
    pub fn display(&self) -> String {
        redact(&self.url)
    }
}

/// Flattens a multi-line message (PostgreSQL's DETAIL/HINT lines) onto one line.
pub fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A URL with any `user:password@` password part replaced.
fn redact(url: &str) -> String {
    if let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    {
        if let Some((auth, tail)) = rest.split_once('@') {
            let user = auth.split(':').next().unwrap_or("");
            return format!("postgres://{user}@{tail}");
        }
    }
    url.to_string()
}

/// A database error as one line: the server's message (with DETAIL/HINT) when there is one.
pub fn db_err(what: &str, e: &postgres::Error) -> Error {
    let msg = match e.as_db_error() {
        Some(d) => one_line(&d.to_string()),
        None => {
            // The client error and its causes ("error connecting to server: Connection refused").
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(c) = src {
                let cs = c.to_string();
                if !s.contains(&cs) {
                    s = format!("{s}: {cs}");
                }
                src = c.source();
            }
            one_line(&s)
        }
    };
    Error::Msg(format!("{what}: {msg}"))
}

/// The TLS client configuration trusting only the certificates in `ca`.
fn tls_config(ca: &Path) -> Result<rustls::ClientConfig> {
    let bad = |r: String| Error::Msg(format!("CA certificate file {}: {r}", ca.display()));
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca).map_err(|e| bad(e.to_string()))?;
    for c in certs {
        let c = c.map_err(|e| bad(format!("not PEM certificates: {e}")))?;
        roots
            .add(c)
            .map_err(|e| bad(format!("unusable certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(bad("holds no certificate".into()));
    }
    // ring, not aws-lc-rs: aws-lc needs cmake (and nasm) and complicates the static aarch64
    // build. rustls 0.23.48 deprecates ring's provider for lacking post-quantum key exchange
    // (X25519MLKEM768); classical ECDHE still protects the link today, and the provider is
    // one line to switch when aws-lc builds cleanly for the boards.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("TLS set-up: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Parses the target into a client configuration (credentials applied, TLS required for TCP).
/// Returns it with whether TLS is needed.
pub fn config(t: &DbTarget) -> Result<(Config, bool)> {
    let what = format!("database {}", t.display());
    let mut cfg: Config = t.url.parse().map_err(|e: postgres::Error| {
        Error::Msg(format!(
            "{what}: not a connection URL: {}",
            one_line(&e.to_string())
        ))
    })?;
    if cfg.get_password().is_some() {
        return Err(Error::Msg(format!(
            "{what}: holds a password: put it in a 0600 credentials file instead (a URL is seen in `ps` and in logs)"
        )));
    }
    if let Some(p) = &t.credentials {
        let c = Credentials::load(p)?;
        cfg.user(&c.user).password(c.password.as_bytes());
    }
    if cfg.get_user().is_none() {
        return Err(Error::Msg(format!(
            "{what}: no user: give a credentials file"
        )));
    }
    let tcp = cfg.get_hosts().iter().any(|h| matches!(h, Host::Tcp(_)));
    if tcp {
        if cfg.get_ssl_mode() == SslMode::Disable {
            return Err(Error::Msg(format!(
                "{what}: sslmode=disable refused over TCP (templates and credentials would cross the network in clear)"
            )));
        }
        cfg.ssl_mode(SslMode::Require);
    }
    cfg.application_name("facegate")
        .connect_timeout(t.timeout)
        .tcp_user_timeout(t.timeout)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30));
    Ok((cfg, tcp))
}

/// Connects (TLS over TCP, verified against `t.ca`).
pub fn connect(t: &DbTarget) -> Result<Client> {
    let (cfg, tcp) = config(t)?;
    let what = format!("database {}", t.display());
    if tcp {
        let ca = t.ca.as_deref().ok_or_else(|| {
            Error::Msg(format!(
                "{what}: a TCP connection needs the server's CA certificate (--ca FILE, or [fleet].ca in the board)"
            ))
        })?;
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(ca)?);
        cfg.connect(tls).map_err(|e| db_err(&what, &e))
    } else {
        cfg.connect(NoTls).map_err(|e| db_err(&what, &e))
    }
}

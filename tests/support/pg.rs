//! A throwaway PostgreSQL server for the tests of the PostgreSQL store.
//!
//! This module owns:
//! - finding Debian's server (`initdb`, `pg_ctl`, `psql` under
//!   `/usr/lib/postgresql/<version>/bin`, the newest version there) and
//!   skipping loudly without it, or failing when `OUTREACH_REQUIRE_POSTGRES`
//!   is set (as `.ci/run` does once it has installed it). Nothing here
//!   downloads a server;
//! - one cluster per test binary, started on first use on 127.0.0.1 and a
//!   free port, in a temp folder, with password (SCRAM) authentication;
//!   stopped (`pg_ctl stop -m immediate`) and removed when the test binary
//!   exits. `initdb` and `pg_ctl` refuse to run as root: as root they run
//!   as `nobody`, which owns the data folder;
//! - a fresh database per test ([`database`]), and [`Db::sql`] to look at
//!   it with `psql` the way an operator would.
//!
//! The superuser's password contains `PLANTED`, so [`super::Run`]'s
//! check that no planted secret is printed covers it too.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The cluster's superuser.
pub const USER: &str = "outreach_test";
/// Its password (a planted secret: it must never be printed).
pub const PASSWORD: &str = "pg-PLANTED-password-5d1e";

/// Where Debian puts the server's programs: the newest version's bin.
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

/// A running cluster.
pub struct Cluster {
    pub port: u16,
    bin: PathBuf,
    /// The temp folder: `data/`, the server log, the password file.
    root: PathBuf,
    /// Who runs `initdb` and `pg_ctl` (`nobody` when we are root).
    run_as: Option<String>,
}

impl Cluster {
    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// `initdb`/`pg_ctl`, as the unprivileged user when we are root.
    fn server_command(bin: &Path, program: &str, run_as: &Option<String>) -> Command {
        let exe = bin.join(program);
        match run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        }
    }

    fn start() -> Result<Cluster, String> {
        let bin = bin_dir().ok_or("no PostgreSQL server under /usr/lib/postgresql")?;
        let root = std::env::temp_dir().join(format!(
            "outreach-pg-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {root:?}: {e}"))?;
        let root_user = unsafe { libc::geteuid() } == 0;
        let run_as = root_user.then(|| "nobody".to_string());
        let pwfile = root.join("pw");
        std::fs::write(&pwfile, PASSWORD).map_err(|e| e.to_string())?;
        if root_user {
            // The server's user must reach and own its folder.
            let st = Command::new("chown")
                .args(["-R", "nobody:"])
                .arg(&root)
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !st.success() {
                return Err(format!("chown -R nobody: {root:?} failed"));
            }
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| e.to_string())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let cluster = Cluster {
            port,
            bin,
            root,
            run_as,
        };
        let out = Self::server_command(&cluster.bin, "initdb", &cluster.run_as)
            .arg("-D")
            .arg(cluster.data())
            .args(["-U", USER, "--auth=scram-sha-256", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let _ = std::fs::remove_file(&pwfile);
        cluster.pg_ctl_start()?;
        Ok(cluster)
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let out = Self::server_command(&self.bin, "pg_ctl", &self.run_as)
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.root.join("server.log"))
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 -c shared_buffers=16MB",
                self.port
            ))
            .arg("start")
            .stdout(Stdio::null())
            .output()
            .map_err(|e| format!("pg_ctl start: {e}"))?;
        if !out.status.success() {
            let log = std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default();
            return Err(format!(
                "pg_ctl start failed: {}\n{log}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    fn stop(&self) {
        self.pg_ctl_stop("immediate");
        let _ = std::fs::remove_dir_all(&self.root);
    }

    /// Stop the server, keeping its data: clients are disconnected at
    /// once, as in a restart. (Not `immediate`: the test server runs with
    /// `synchronous_commit=off`, where a crash may lose the last commits.)
    pub fn halt(&self) {
        self.pg_ctl_stop("fast");
    }

    fn pg_ctl_stop(&self, mode: &str) {
        let _ = Self::server_command(&self.bin, "pg_ctl", &self.run_as)
            .arg("-D")
            .arg(self.data())
            .args(["-m", mode, "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Serve TLS with `cert` and `key` (PEM) and refuse connections
    /// without it; restarts the server.
    pub fn require_tls(&self, cert: &str, key: &str) {
        use std::os::unix::fs::PermissionsExt;
        let data = self.data();
        for (name, pem) in [("server.crt", cert), ("server.key", key)] {
            let p = data.join(name);
            std::fs::write(&p, pem).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            if let Some(user) = &self.run_as {
                let ok = Command::new("chown")
                    .arg(format!("{user}:"))
                    .arg(&p)
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok, "chown {p:?}");
            }
        }
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        use std::io::Write;
        writeln!(
            conf,
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'"
        )
        .unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "hostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        self.halt();
        self.resume();
    }

    /// Start a halted server again, on the same port and data.
    pub fn resume(&self) {
        self.pg_ctl_start().expect("restart the test cluster");
    }

    /// A folder the test binary's homes may share (removed with the
    /// cluster): their compiled-plugin cache, so that each test does not
    /// compile every plugin again.
    pub fn shared_dir(&self, name: &str) -> PathBuf {
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// `psql` as the superuser on database `db`: unaligned, tuples only.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .args(["-d", db, "-c", sql])
            .env("PGPASSWORD", PASSWORD)
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

extern "C" fn stop_at_exit() {
    if let Some(Ok(c)) = CLUSTER.get() {
        c.stop();
    }
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// The test binary's cluster, started on first use. `None` (after saying
/// so loudly on stderr) when PostgreSQL is not installed; a panic when it
/// is required (`OUTREACH_REQUIRE_POSTGRES`) or fails to start.
pub fn cluster() -> Option<&'static Cluster> {
    let c = CLUSTER.get_or_init(|| {
        let c = Cluster::start();
        if c.is_ok() {
            unsafe { libc::atexit(stop_at_exit) };
        }
        c
    });
    match c {
        Ok(c) => Some(c),
        Err(why) if bin_dir().is_none() => {
            assert!(
                std::env::var_os("OUTREACH_REQUIRE_POSTGRES").is_none(),
                "the PostgreSQL tests need a server (OUTREACH_REQUIRE_POSTGRES is set): {why}"
            );
            eprintln!(
                "\n*** SKIPPING a PostgreSQL test: {why}.\n\
                 *** Install Debian's `postgresql` package to run it; CI installs it\n\
                 *** (.ci/run) and sets OUTREACH_REQUIRE_POSTGRES=1, which turns this\n\
                 *** skip into a failure.\n"
            );
            None
        }
        Err(why) => panic!("cannot start the test PostgreSQL cluster: {why}"),
    }
}

/// One test's database.
pub struct Db {
    pub cluster: &'static Cluster,
    pub name: String,
}

/// A fresh, empty database on the test cluster (`None`: skipped, see
/// [`cluster`]).
pub fn database() -> Option<Db> {
    static N: AtomicU32 = AtomicU32::new(0);
    let cluster = cluster()?;
    let name = format!(
        "t{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    cluster
        .psql("postgres", &format!("CREATE DATABASE {name}"))
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    Some(Db { cluster, name })
}

impl Db {
    /// The connection URL, with the (planted) password.
    pub fn url(&self) -> String {
        self.url_with(USER, PASSWORD)
    }

    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{}",
            self.cluster.port, self.name
        )
    }

    /// Run `sql` on this database with `psql`; its output (panics on error).
    pub fn sql(&self, sql: &str) -> String {
        self.cluster
            .psql(&self.name, sql)
            .unwrap_or_else(|e| panic!("psql {sql}: {e}"))
    }
}

/// A cluster of one test's own (one that test stops and starts), stopped
/// and removed when dropped. `None`: skipped, as [`cluster`].
pub struct Own(&'static Cluster);

impl std::ops::Deref for Own {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        self.0
    }
}

impl Drop for Own {
    fn drop(&mut self) {
        self.0.stop();
    }
}

pub fn own_cluster() -> Option<(Own, Db)> {
    cluster()?;
    let c: &'static Cluster = Box::leak(Box::new(
        Cluster::start().expect("start a second test cluster"),
    ));
    let name = "own".to_string();
    c.psql("postgres", &format!("CREATE DATABASE {name}"))
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    Some((Own(c), Db { cluster: c, name }))
}

//! A real PostgreSQL server on loopback for the PostgreSQL connector tests and benchmark:
//! `initdb` into a temp dir, `pg_ctl start` on a free port with `wal_level=logical` and
//! SCRAM passwords over TCP and a short `wal_sender_timeout` (4 s: a replication client
//! that does not answer keepalives is cut off within the tests), `psql` for the test's own statements, stopped when dropped.
//! The server refuses to run as root: as root, every command runs as the `postgres` user.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// The password of the `postgres` superuser in the test cluster.
pub const PASSWORD: &str = "pg-test-password";

/// The directory of the newest installed server's programs (`initdb`, `pg_ctl`, `psql`).
pub fn postgres_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort_by_key(|bin| {
        bin.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
    });
    found.pop().unwrap_or_else(|| {
        panic!("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): the PostgreSQL block of .ci/run installs it (apt-get install postgresql)")
    })
}

/// A running test server; stopped (and its directory removed) when dropped.
pub struct Postgres {
    pub dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
    as_root: bool,
}

impl Postgres {
    /// Creates and starts a cluster on a free loopback port.
    pub fn start() -> Postgres {
        let bin = postgres_bin();
        let dir = tempfile::tempdir().expect("temp dir");
        let as_root = is_root();
        if as_root {
            // The postgres user must reach and own the cluster directory.
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown the temp dir to postgres failed");
        }
        let pg = Postgres {
            port: super::free_port(),
            dir,
            bin,
            as_root,
        };
        let pwfile = pg.dir.path().join("pwfile");
        std::fs::write(&pwfile, PASSWORD).expect("write pwfile");
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data().display().to_string(),
                "-U",
                "postgres",
                "--pwfile",
                &pwfile.display().to_string(),
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        // pg_hba's defaults already allow replication connections from 127.0.0.1.
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c wal_level=logical -c max_wal_senders=8 -c max_replication_slots=8 -c wal_sender_timeout=4s -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            pg.port,
            pg.dir.path().display()
        );
        pg.run(
            "pg_ctl",
            &[
                "-D",
                &pg.data().display().to_string(),
                "-o",
                &options,
                "-l",
                &pg.dir.path().join("server.log").display().to_string(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `jdbc:postgresql://127.0.0.1:PORT/postgres`
    pub fn jdbc_url(&self) -> String {
        format!("jdbc:postgresql://127.0.0.1:{}/postgres", self.port)
    }

    /// What `network.allow` must list.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Runs SQL over TCP (as the connectors do, with the password) and returns psql's
    /// unaligned, tuples-only output.
    pub fn sql(&self, sql: &str) -> String {
        let output = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-p", &self.port.to_string(), "-c", sql])
            .env("PGPASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        assert!(
            output.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_string()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// A server program, run as the postgres user when we are root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        }
    }

    /// Runs a server program and checks it worked.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        let output = self
            .command(program)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program} from {}: {e}", self.bin.display()));
        assert!(
            output.status.success(),
            "{program} failed: {}{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
        output
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let stopped = self
            .command("pg_ctl")
            .args([
                "-D",
                &self.data().display().to_string(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            // pg_ctl failed: kill the postmaster by the PID it recorded.
            let pid_file = self.data().join("postmaster.pid");
            if let Some(pid) = std::fs::read_to_string(pid_file)
                .ok()
                .and_then(|t| t.lines().next().map(str::to_string))
            {
                let _ = Command::new("kill").args(["-9", &pid]).status();
            }
        }
    }
}

/// Whether this process runs as root (`id -u` is 0).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

//! The baselines every target is a ratio to, started and measured by this tool so that they run
//! in the same session, on the same machine, as the figures they judge.
//!
//! - [`Nginx`]: a static 1 KiB file served by nginx on loopback, loaded by this generator with
//!   the same settings as tresor's GET (the HTTP ceiling of the machine with the generator on
//!   it). Access log off, keep-alive without a request cap, `worker_processes auto`.
//! - [`Postgres`] and [`pgbench`]: a throwaway PostgreSQL cluster (the installed server
//!   binaries; `initdb`/`pg_ctl` run as the `postgres` user through `runuser` when this runs as
//!   root), with PostgreSQL's durable defaults (`fsync=on`, `synchronous_commit=on`), a table
//!   shaped like tresor's `records` holding the same number of rows with values of the same
//!   size, and pgbench running a point SELECT or an UPSERT of one row per transaction (prepared
//!   statements, over TCP on loopback).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::procfs;
use crate::report::{Readings, RunResult, Settings};
use crate::runner::Measured;
use crate::server::{free_port, terminate};

/// The size of the static file nginx serves.
pub const STATIC_FILE_BYTES: usize = 1024;
/// The path of that file.
pub const STATIC_PATH: &str = "/1k.bin";

/// A running nginx serving [`STATIC_PATH`] from a temporary directory.
pub struct Nginx {
    child: Child,
    _dir: tempfile::TempDir,
    pub url: String,
}

impl Nginx {
    pub async fn start(bin: &Path) -> anyhow::Result<Nginx> {
        let bin = which(bin).with_context(|| {
            format!(
                "no nginx at {} (Debian: `apt-get install nginx-light`, or pass --nginx-bin)",
                bin.display()
            )
        })?;
        let dir = tempfile::Builder::new()
            .prefix("tresor-bench-nginx-")
            .tempdir()?;
        // nginx's workers run as an unprivileged user when started as root: they must be able
        // to read the file.
        set_mode(dir.path(), 0o755)?;
        let www = dir.path().join("www");
        std::fs::create_dir(&www)?;
        set_mode(&www, 0o755)?;
        let file = www.join(STATIC_PATH.trim_start_matches('/'));
        std::fs::write(&file, vec![b'x'; STATIC_FILE_BYTES])?;
        set_mode(&file, 0o644)?;
        let port = free_port()?;
        let d = dir.path().display();
        let conf = format!(
            "worker_processes auto;\n\
             daemon off;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n\
               access_log off;\n\
               keepalive_requests 100000000;\n\
               keepalive_timeout 300s;\n\
               client_body_temp_path {d}/body;\n\
               proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n\
               uwsgi_temp_path {d}/uwsgi;\n\
               scgi_temp_path {d}/scgi;\n\
               server {{ listen 127.0.0.1:{port}; root {www}; location / {{ }} }}\n\
             }}\n",
            www = www.display()
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut nginx = Nginx {
            child,
            _dir: dir,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if let Some(status) = nginx.child.try_wait()? {
                let log = std::fs::read_to_string(nginx._dir.path().join("error.log"))
                    .unwrap_or_default();
                bail!("nginx exited with {status}:\n{log}");
            }
            if Instant::now() > deadline {
                bail!("nginx did not listen within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(nginx)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stop(mut self) -> anyhow::Result<()> {
        // SIGTERM is nginx's fast shutdown.
        terminate(&mut self.child, Duration::from_secs(5))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = terminate(&mut self.child, Duration::from_secs(2));
    }
}

/// A throwaway PostgreSQL cluster with a `records` table like tresor's.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    pub keys: usize,
    pub value_size: usize,
}

/// A pgbench workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgbenchScript {
    /// `SELECT … WHERE (ns, store, key) = …` of a random existing row.
    Select,
    /// `INSERT … ON CONFLICT DO UPDATE` of a random existing row with a new value: one durable
    /// commit per transaction.
    Upsert,
}

impl PgbenchScript {
    pub fn name(self) -> &'static str {
        match self {
            PgbenchScript::Select => "select",
            PgbenchScript::Upsert => "upsert",
        }
    }

    fn sql(self) -> &'static str {
        match self {
            PgbenchScript::Select => {
                "\\set k random(0, :keys - 1)\n\
                 SELECT version, created_at, updated_at, expires_at, value, description FROM records \
                 WHERE ns = 1 AND store = 1 AND key = convert_to('k' || (:k)::text, 'UTF8');\n"
            }
            PgbenchScript::Upsert => {
                "\\set k random(0, :keys - 1)\n\
                 INSERT INTO records (ns, store, key, version, created_at, updated_at, expires_at, value, description) \
                 VALUES (1, 1, convert_to('k' || (:k)::text, 'UTF8'), 1, 0, 0, NULL, \
                 decode(repeat(md5(random()::text), :reps), 'hex'), NULL) \
                 ON CONFLICT (ns, store, key) DO UPDATE SET version = records.version + 1, \
                 updated_at = excluded.updated_at, value = excluded.value;\n"
            }
        }
    }
}

/// Bytes a sealed value adds to its plaintext (tresor's envelope header, salt, nonce and tag),
/// so that the baseline's rows are as large as tresor's.
const ENVELOPE_BYTES: usize = 64;

impl Postgres {
    /// `initdb`, start on a free port, create and fill the table.
    pub fn start(bin: Option<&Path>, keys: usize, value_size: usize) -> anyhow::Result<Postgres> {
        let bin = match bin {
            Some(b) => b.to_path_buf(),
            None => postgres_bin_dir().context(
                "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin (Debian: `apt-get install \
                 postgresql`, or pass --pg-bin)",
            )?,
        };
        let as_postgres = rustix::process::getuid().is_root();
        let dir = tempfile::Builder::new()
            .prefix("tresor-bench-pg-")
            .tempdir()?;
        set_mode(dir.path(), 0o755)?;
        if as_postgres {
            run(Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path()))?;
        }
        let port = free_port()?;
        let pg = Postgres {
            dir,
            bin,
            port,
            as_postgres,
            keys,
            value_size,
        };
        let data = pg.dir.path().join("data");
        run(pg
            .server_cmd("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data))?;
        run(pg
            .server_cmd("pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(pg.dir.path().join("postgres.log"))
            .arg("-w")
            .arg("-o")
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
                pg.dir.path().display()
            ))
            .arg("start"))?;
        let reps = (value_size + ENVELOPE_BYTES).div_ceil(16);
        pg.psql(&format!(
            "CREATE TABLE records (
                ns BIGINT NOT NULL, store SMALLINT NOT NULL, key BYTEA NOT NULL,
                version BIGINT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,
                expires_at BIGINT, value BYTEA NOT NULL, description BYTEA,
                PRIMARY KEY (ns, store, key));
             INSERT INTO records SELECT 1, 1, convert_to('k' || g::text, 'UTF8'), 1, 0, 0, NULL,
                decode(repeat(md5(g::text), {reps}), 'hex'), NULL FROM generate_series(0, {}) g;",
            keys.saturating_sub(1)
        ))?;
        // Each in its own transaction (one `psql -c` runs its statements in one).
        pg.psql("VACUUM ANALYZE records")?;
        pg.psql("CHECKPOINT")?;
        for script in [PgbenchScript::Select, PgbenchScript::Upsert] {
            let path = pg.script_path(script);
            std::fs::write(&path, script.sql())?;
            set_mode(&path, 0o644)?;
        }
        Ok(pg)
    }

    /// A command for a server binary, as the `postgres` user when this runs as root.
    fn server_cmd(&self, name: &str) -> Command {
        let exe = self.bin.join(name);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn client_cmd(&self, name: &str) -> Command {
        let mut c = Command::new(self.bin.join(name));
        c.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
        ]);
        c
    }

    fn psql(&self, sql: &str) -> anyhow::Result<()> {
        run(self.client_cmd("psql").args([
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            "postgres",
            "-c",
            sql,
        ]))
    }

    fn script_path(&self, script: PgbenchScript) -> PathBuf {
        self.dir.path().join(format!("{}.sql", script.name()))
    }

    /// A URL of database `db` on this cluster (as the `postgres` superuser, over TCP).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates an empty database `name` (for tresor's own schema, beside the baseline's table).
    pub fn create_database(&self, name: &str) -> anyhow::Result<()> {
        self.psql(&format!("CREATE DATABASE {name}"))
    }

    /// The postmaster's pid.
    pub fn pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Runs `script` with `clients` connections: a warm-up run, then the measured one, whose
    /// per-transaction log gives the latency percentiles.
    pub fn pgbench(
        &self,
        script: PgbenchScript,
        clients: usize,
        warmup: Duration,
        duration: Duration,
    ) -> anyhow::Result<RunResult> {
        let reps = (self.value_size + ENVELOPE_BYTES).div_ceil(16);
        let base = |secs: u64| {
            let mut c = self.client_cmd("pgbench");
            c.args(["-n", "-M", "prepared", "-j", "2"])
                .args(["-c", &clients.to_string(), "-T", &secs.max(1).to_string()])
                .args([
                    "-D",
                    &format!("keys={}", self.keys),
                    "-D",
                    &format!("reps={reps}"),
                ])
                .arg("-f")
                .arg(self.script_path(script))
                .current_dir(self.dir.path());
            c
        };
        if !warmup.is_zero() {
            run(base(warmup.as_secs_f64().round() as u64).arg("postgres"))?;
        }
        let logs = self.dir.path().join(format!("log-{}", script.name()));
        std::fs::create_dir_all(&logs)?;
        let prefix = logs.join("tx");
        let pid = self.pid();
        let cpu0 = pid.and_then(procfs::tree_cpu_seconds);
        let gen0 = procfs::own_children_cpu_seconds();
        let load = procfs::loadavg();
        let busy0 = procfs::system_busy_seconds();
        let secs = duration.as_secs_f64().round().max(1.0) as u64;
        let out = output(
            base(secs)
                .arg("-l")
                .arg(format!("--log-prefix={}", prefix.display()))
                .arg("postgres"),
        )?;
        let busy1 = procfs::system_busy_seconds();
        // Let the postmaster reap the backends, so that their CPU time is in its `cutime`.
        std::thread::sleep(Duration::from_millis(300));
        let tps = out
            .lines()
            .find_map(|l| l.strip_prefix("tps = "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
            .with_context(|| format!("no `tps = ` in pgbench's output:\n{out}"))?;
        let failed = out
            .lines()
            .find_map(|l| l.strip_prefix("number of failed transactions: "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        let mut m = Measured::new(Duration::from_secs(secs));
        for entry in std::fs::read_dir(&logs)? {
            let path = entry?.path();
            for line in std::io::BufReader::new(std::fs::File::open(&path)?).lines() {
                // client_id transaction_no latency_us script_no time_epoch time_us
                if let Some(us) = line?
                    .split_whitespace()
                    .nth(2)
                    .and_then(|t| t.parse::<u64>().ok())
                {
                    m.latency.saturating_record((us * 1000).max(1));
                    m.ok += 1;
                }
            }
            std::fs::remove_file(&path)?;
        }
        m.errors = failed;
        let settings = Settings {
            name: format!("pgbench {} c={clients}", script.name()),
            op: format!("pgbench-{}", script.name()),
            concurrency: clients,
            rate: None,
            value_size: self.value_size,
            keys: self.keys,
            installations: 1,
            ops_per_request: 1,
            warmup_s: warmup.as_secs_f64(),
        };
        let server_cpu_s = pid
            .and_then(procfs::tree_cpu_seconds)
            .zip(cpu0)
            .map(|(b, a)| b - a);
        let generator_cpu_s = procfs::own_children_cpu_seconds() - gen0;
        let other_cpu_s = busy0
            .zip(busy1)
            .map(|(a, b)| (b - a - server_cpu_s.unwrap_or(0.0) - generator_cpu_s).max(0.0));
        let readings = Readings {
            server_cpu_s,
            server_peak_rss_mib: pid.and_then(procfs::tree_peak_rss_mib),
            generator_cpu_s,
            other_cpu_s,
            loadavg: load,
        };
        let mut r = RunResult::new(&settings, &m, readings);
        // pgbench's own count excludes connection time; the log count over the nominal window
        // is within a fraction of a percent of it.
        r.rps = tps;
        Ok(r)
    }

    pub fn stop(self) -> anyhow::Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&self) -> anyhow::Result<()> {
        let data = self.dir.path().join("data");
        if data.join("postmaster.pid").exists() {
            run(self.server_cmd("pg_ctl").arg("-D").arg(&data).args([
                "-m",
                "immediate",
                "-w",
                "stop",
            ]))?;
        }
        Ok(())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

/// The newest `/usr/lib/postgresql/*/bin` holding `initdb`, `pg_ctl` and `pgbench`.
pub fn postgres_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            ["initdb", "pg_ctl", "pgbench", "psql"]
                .iter()
                .all(|b| bin.join(b).is_file())
                .then_some((v, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, d)| d)
}

/// `bin` if it is a path to a file, else its first match on `PATH` (and `/usr/sbin`).
fn which(bin: &Path) -> Option<PathBuf> {
    if bin.components().count() > 1 {
        return bin.is_file().then(|| bin.to_path_buf());
    }
    let path = std::env::var("PATH").unwrap_or_default() + ":/usr/sbin:/sbin";
    path.split(':')
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.is_file())
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    output(cmd).map(|_| ())
}

/// Runs `cmd` to its end; its stdout, or an error with both outputs.
fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

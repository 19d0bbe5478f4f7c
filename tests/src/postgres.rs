//! A real Postgres cluster the harness owns: initdb'ed on first use, on a free port,
//! run as an unprivileged user (Postgres refuses root), with fault injection.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::{Gid, Pid, Uid, User};

use crate::process::{Owned, Scratch, SpawnOptions, StopPolicy};

const DB_USER: &str = "livegate";
const DB_NAME: &str = "livegate";
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running Postgres; stopped (immediate shutdown) on drop.
#[derive(Debug)]
pub struct Postgres {
    // Dropped in this order: the server first, then its files.
    server: Option<Owned>,
    bin_dir: PathBuf,
    run_as: RunAs,
    port: u16,
    password: String,
    tls: bool,
    /// The CA that signed the server's certificate (TLS clusters only).
    ca_cert: Option<PathBuf>,
    scratch: Scratch,
}

/// The OS user Postgres runs as.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: Uid,
    gid: Gid,
}

impl Postgres {
    /// A fresh cluster in a temporary directory on a free port.
    pub fn start() -> anyhow::Result<Postgres> {
        let scratch = Scratch::new("livegate-pg-")?;
        Postgres::start_in(scratch, crate::ports::free_port()?)
    }

    /// A fresh cluster that speaks TLS (a certificate for `localhost` signed by a CA of its
    /// own, [`Postgres::ca_cert`]) and refuses every TCP connection without it.
    pub fn start_with_tls() -> anyhow::Result<Postgres> {
        let scratch = Scratch::new("livegate-pg-tls-")?;
        Postgres::start_configured(scratch, crate::ports::free_port()?, true)
    }

    /// A cluster in `scratch` (created on first use, reused after) on `port`.
    pub fn start_in(scratch: Scratch, port: u16) -> anyhow::Result<Postgres> {
        Postgres::start_configured(scratch, port, false)
    }

    fn start_configured(scratch: Scratch, port: u16, tls: bool) -> anyhow::Result<Postgres> {
        let bin_dir = bin_dir()?;
        let run_as = run_as()?;
        let password = ensure_cluster(&bin_dir, run_as, scratch.path())?;
        let ca_cert = if tls {
            let ca = TestCa::new("livegate test Postgres CA")?;
            let ca_path = scratch.path().join("ca.crt");
            std::fs::write(&ca_path, ca.pem())?;
            require_tls(run_as, &scratch.path().join("data"), &ca)?;
            Some(ca_path)
        } else {
            None
        };
        let mut postgres = Postgres {
            server: None,
            bin_dir,
            run_as,
            port,
            password,
            tls,
            ca_cert,
            scratch,
        };
        postgres.launch()?;
        postgres.ensure_database()?;
        Ok(postgres)
    }

    /// A libpq URL for the `livegate` database, with the password.
    pub fn url(&self) -> String {
        self.url_via(self.port)
    }

    /// The same URL through another port (a relay in front of this server).
    pub fn url_via(&self, port: u16) -> String {
        format!(
            "postgres://{DB_USER}:{}@127.0.0.1:{port}/{DB_NAME}",
            self.password
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PEM file of the CA that signed the server's certificate (for `localhost`), on a
    /// TLS cluster.
    pub fn ca_cert(&self) -> Option<&Path> {
        self.ca_cert.as_deref()
    }

    /// The password in [`Postgres::url`], for tests that check it is never logged.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The postmaster's pid.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Owned::pid)
    }

    /// Freezes every Postgres process (postmaster and backends), as `docker pause` does.
    /// A signal takes effect asynchronously, and the postmaster may finish a `fork()`
    /// meanwhile: wait until it is stopped, then stop children until none runs.
    pub fn pause(&self) -> anyhow::Result<()> {
        let Some(server) = &self.server else {
            anyhow::bail!("postgres is not running");
        };
        let postmaster = server.pid();
        server.signal(Signal::SIGSTOP)?;
        let stopped = |pid: u32| matches!(crate::procfs::state(pid), Some('T') | None);
        crate::poll::until("the postmaster to stop", READY_TIMEOUT, || {
            stopped(postmaster).then_some(())
        })?;
        crate::poll::until("every backend to stop", READY_TIMEOUT, || {
            let running: Vec<u32> = crate::procfs::descendants(postmaster)
                .into_iter()
                .filter(|pid| !stopped(*pid))
                .collect();
            for pid in &running {
                let _ = nix::sys::signal::kill(Pid::from_raw(*pid as i32), Signal::SIGSTOP);
            }
            running.is_empty().then_some(())
        })
    }

    /// Thaws what [`Postgres::pause`] froze.
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal_all(Signal::SIGCONT)
    }

    /// Kills every Postgres process with SIGKILL, as a crash or an OOM kill would.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if self.server.is_some() {
            self.signal_all(Signal::SIGKILL)?;
        }
        if let Some(mut server) = self.server.take() {
            server.wait_exit(READY_TIMEOUT)?;
        }
        Ok(())
    }

    /// Starts the server again on the same port and data (after [`Postgres::kill`]).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill()?;
        self.launch()
    }

    pub fn log_text(&self) -> String {
        self.server
            .as_ref()
            .map(Owned::log_text)
            .unwrap_or_default()
    }

    /// Signals the postmaster and every backend. Postgres' children each call
    /// `setsid()`, so a process-group signal would reach the postmaster alone.
    fn signal_all(&self, signal: Signal) -> anyhow::Result<()> {
        let Some(server) = &self.server else {
            anyhow::bail!("postgres is not running");
        };
        server.signal(signal)?;
        for pid in crate::procfs::descendants(server.pid()) {
            // A backend may exit between the listing and the signal.
            let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), signal);
        }
        Ok(())
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let data = self.scratch.path().join("data");
        let mut command = Command::new(self.bin_dir.join("postgres"));
        command
            .arg("-D")
            .arg(&data)
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", data.display()))
            // fsync off only risks data on an OS crash; a killed server keeps its commits.
            .args(["-c", "fsync=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"]);
        if self.tls {
            command.args(["-c", "ssl=on", "-c", "ssl_cert_file=server.crt"]);
            command.args(["-c", "ssl_key_file=server.key"]);
        }
        self.run_as.apply(&mut command);
        let options = SpawnOptions {
            own_process_group: false,
            // SIGINT is Postgres' "fast" shutdown: clean, no crash recovery next start.
            stop: StopPolicy {
                signal: Signal::SIGINT,
                grace: Duration::from_secs(10),
            },
        };
        let log = self.scratch.path().join("postgres.log");
        self.server = Some(Owned::spawn("postgres", command, &log, options)?);
        let port = self.port.to_string();
        let pg_isready = self.bin_dir.join("pg_isready");
        crate::poll::until("postgres to accept connections", READY_TIMEOUT, || {
            Command::new(&pg_isready)
                .args(["-q", "-h", "127.0.0.1", "-p", &port])
                .status()
                .ok()
                .filter(|status| status.success())
        })?;
        Ok(())
    }

    fn ensure_database(&self) -> anyhow::Result<()> {
        let socket_dir = self.scratch.path().join("data");
        let exists = Command::new(self.bin_dir.join("psql"))
            .arg("-h")
            .arg(&socket_dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                DB_USER,
                "-d",
                "postgres",
            ])
            .args([
                "-tAc",
                "SELECT 1 FROM pg_database WHERE datname = 'livegate'",
            ])
            .output()?;
        if String::from_utf8_lossy(&exists.stdout).trim() == "1" {
            return Ok(());
        }
        let status = Command::new(self.bin_dir.join("createdb"))
            .arg("-h")
            .arg(&socket_dir)
            .args(["-p", &self.port.to_string(), "-U", DB_USER, DB_NAME])
            .status()?;
        anyhow::ensure!(status.success(), "createdb {DB_NAME} failed");
        Ok(())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // A frozen server cannot act on its stop signal, and its backends would
        // stay stopped: thaw everything before the server is stopped.
        let _ = self.resume();
    }
}

impl RunAs {
    fn apply(self, command: &mut Command) {
        if Uid::effective().is_root() {
            command.uid(self.uid.as_raw()).gid(self.gid.as_raw());
        }
    }
}

/// Postgres refuses to run as root: as root, run it as the `postgres` system user.
fn run_as() -> anyhow::Result<RunAs> {
    if !Uid::effective().is_root() {
        return Ok(RunAs {
            uid: Uid::effective(),
            gid: Gid::effective(),
        });
    }
    let user = User::from_name("postgres")?.ok_or_else(|| {
        anyhow::anyhow!(
            "running as root needs the `postgres` system user (apt-get install postgresql)"
        )
    })?;
    Ok(RunAs {
        uid: user.uid,
        gid: user.gid,
    })
}

/// `LIVEGATE_PG_BIN`, else the newest Debian `/usr/lib/postgresql/<v>/bin`, else `PATH`.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("LIVEGATE_PG_BIN").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    debian.sort();
    if let Some((_, bin)) = debian.pop() {
        return Ok(bin);
    }
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|dir| dir.join("initdb").exists() && dir.join("postgres").exists());
    on_path.ok_or_else(|| {
        anyhow::anyhow!("Postgres binaries (initdb) not found: install the Debian package `postgresql`, or set LIVEGATE_PG_BIN")
    })
}

/// Creates the cluster under `dir` unless it exists; returns the `livegate` user's password.
fn ensure_cluster(bin_dir: &Path, run_as: RunAs, dir: &Path) -> anyhow::Result<String> {
    let data = dir.join("data");
    let password_file = dir.join("password");
    if data.join("PG_VERSION").exists() {
        return Ok(std::fs::read_to_string(&password_file)?.trim().to_string());
    }
    let password = random_password()?;
    std::fs::write(&password_file, &password)?;
    std::fs::create_dir_all(&data)?;
    nix::unistd::chown(&data, Some(run_as.uid), Some(run_as.gid))?;
    nix::unistd::chown(&password_file, Some(run_as.uid), Some(run_as.gid))?;
    let mut initdb = Command::new(bin_dir.join("initdb"));
    initdb
        .arg("-D")
        .arg(&data)
        .args(["-U", DB_USER, "-E", "UTF8", "--locale=C", "--no-sync"])
        .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
        .arg(format!("--pwfile={}", password_file.display()));
    run_as.apply(&mut initdb);
    let output = initdb.output()?;
    anyhow::ensure!(
        output.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(password)
}

/// A certificate authority made for a test.
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> anyhow::Result<TestCa> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let issuer = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate()?)?;
        Ok(TestCa { issuer })
    }

    /// The CA's certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` signed by this CA: (certificate PEM, key PEM).
    pub fn server_cert(&self, names: &[&str]) -> anyhow::Result<(String, String)> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = rcgen::CertificateParams::new(names)?;
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// Writes a certificate for `localhost` signed by `ca` into the data directory and makes
/// `pg_hba.conf` refuse TCP connections that do not use TLS (the first matching line wins).
fn require_tls(run_as: RunAs, data: &Path, ca: &TestCa) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let (cert, key) = ca.server_cert(&["localhost"])?;
    let files = [("server.crt", cert), ("server.key", key)];
    for (name, pem) in files {
        let path = data.join(name);
        std::fs::write(&path, pem)?;
        // Postgres refuses a key that others can read.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        nix::unistd::chown(&path, Some(run_as.uid), Some(run_as.gid))?;
    }
    let hba = data.join("pg_hba.conf");
    let rules = std::fs::read_to_string(&hba)?;
    std::fs::write(&hba, format!("hostnossl all all 0.0.0.0/0 reject\n{rules}"))?;
    Ok(())
}

fn random_password() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom_fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn getrandom_fill(bytes: &mut [u8]) -> anyhow::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(bytes)?;
    Ok(())
}

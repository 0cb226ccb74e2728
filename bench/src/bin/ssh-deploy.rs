//! `ssh-deploy`: a deploy of a 100 MiB artifact to three SSH hosts, and rollbacks on them,
//! Sorat (the `sorat_deploy` library) against `scp` + `ln -sfn` scripted by hand.
//!
//! A real OpenSSH server (`/usr/sbin/sshd -D`) runs on 127.0.0.1 on a free port with its own
//! ed25519 host key, one authorized user key and a known-hosts file; the login user is
//! `sorat-ssh` (made by `.ci/ssh-user`) when this runs as root and that user exists, else the
//! user running it. The "hosts" are folders on that server, each serving a small Python HTTP
//! service on its own port from `releases/<n>/` through a `current` symlink: three for Sorat,
//! three for the peer. A release is the artifact (`app.bin`, random bytes) and `server.py`.
//!
//! Connections: both sides keep **one OpenSSH master connection per host, opened before the
//! timed rounds** and reused by every command (Sorat's `SshHost` does this itself; the peer
//! opens `ssh -M -f -N` masters and passes `ControlPath` to every `ssh` and `scp`). Default
//! ciphers on both sides, no compression.
//!
//! Each round makes a new artifact (new random content, so its blob really has to be
//! uploaded), flushes it to disk, then, one side after the other (the order alternates):
//!
//! - **Sorat**: `deploy(&env, &targets, &release, Strategy::AllAtOnce)`, timed from the call
//!   to the report; the report's per-host phases (Prepare, Switch, Restart, Health) are kept.
//!   Then the same content again under a new number (the blob is already on the hosts: what
//!   the content-addressed upload saves).
//! - **Peer**, each host in its own thread: `ssh mkdir -p releases/<n>`, `scp -q` of both
//!   files into it, `ssh 'ln -sfn releases/<n> current.tmp && mv -T current.tmp current'`,
//!   an `ssh` that stops the old service (SIGTERM to its group, waits) and starts the new one
//!   with `setsid`, then `GET /healthz` every 20 ms until it answers 200 (Sorat's health check
//!   is the same: HTTP `/healthz`, every 20 ms, one success).
//!
//! A `sync` (untimed) runs before each timed step, so neither side flushes the other's dirty
//! pages. Old releases are removed between rounds (untimed) to keep disk use bounded. Then
//! rollbacks alternate between the last two releases: `rollback(&env, &targets, Some(n))`
//! against the peer's `ln -sfn` + restart + the same health wait. Then the same rollbacks
//! on three more Sorat hosts run blue-green (`slots`, a 10-minute scale-down delay, Sorat's
//! router on each host: the `sorat` executable beside this one, or `--sorat`): each rollback
//! is a switch of the routers back to the release still running. Unless `--no-breakdown`,
//! each round also times, on three hosts at once, the steps Sorat's prepare is made of
//! (upload through ssh's stdin, hashing, fsync, `cp`, `sync -f`) next to `scp` alone.
//!
//! It asserts no time; it prints medians, p90 and the ratios.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark's report is its output, and its progress goes to standard error"
)]

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use clap::Parser;
use sha2::Digest as _;
use sorat_bench::report::{Table, median, millis, percentile, ratio};
use sorat_bench::rng::SplitMix64;
use sorat_bench::server::free_port;
use sorat_deploy::{
    BlueGreenSlots, DeployReport, Environment, HealthCheck, Outcome, Phase, Probe, ReleaseFile,
    ReleaseMeta, ReleaseSpec, RestartPolicy, ServiceConfig, SshHost, SshTarget, Strategy, Target,
    deploy, rollback,
};

const SSHD: &str = "/usr/sbin/sshd";

/// The deploy user `.ci/ssh-user` makes: a plain `/bin/sh` account.
const DEPLOY_USER: &str = "sorat-ssh";

const HOSTS: usize = 3;

/// How often both sides poll `/healthz`.
const HEALTH_INTERVAL: Duration = Duration::from_millis(20);

const STOP_GRACE: Duration = Duration::from_secs(3);

/// Runs sshd (its arguments) as the child of a process that reaps every orphan at once
/// (`PR_SET_CHILD_SUBREAPER`), as a host's init does. The services both sides start with
/// `setsid` outlive the shell that started them; when they end, their parent is the nearest
/// subreaper, else PID 1. PID 1 of this VM reaps only every ~2 s, and until then the ended
/// service is a zombie that `kill -0` still finds: both sides' stop would wait for it.
const SUBREAPER: &str = r#"import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)
sshd = os.fork()
if sshd == 0:
    os.execv(sys.argv[1], sys.argv[1:])
def stop(*_):
    try:
        os.kill(sshd, signal.SIGTERM)
    except ProcessLookupError:
        pass
signal.signal(signal.SIGTERM, stop)
while True:
    try:
        pid, _ = os.wait()
    except ChildProcessError:
        break
    if pid == sshd:
        break
"#;

/// The service both sides run: `/healthz` answers 200. Python's default SIGTERM ends it.
const SERVICE: &str = r#"import http.server, os
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok" if self.path == "/healthz" else b"?"
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

/// Times deploys of a large artifact to three SSH hosts, and rollbacks: Sorat against scp.
#[derive(Parser, Debug)]
#[command(name = "ssh-deploy")]
struct Args {
    /// Where to work (a temporary folder is made inside; it must be on a disk with room for
    /// about 40 times the artifact's size).
    #[arg(long, default_value = "/tmp")]
    work_dir: PathBuf,
    /// Timed deploys per side (each with a new artifact).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Timed rollbacks per side.
    #[arg(long, default_value_t = 10)]
    rollbacks: usize,
    /// The artifact's size in MiB.
    #[arg(long, default_value_t = 100)]
    size_mib: u64,
    /// Skip timing the steps of the upload one by one.
    #[arg(long)]
    no_breakdown: bool,
    /// Run sshd directly instead of under a subreaper that reaps ended services at once
    /// (see `SUBREAPER`): the stops then wait for PID 1 to reap them.
    #[arg(long)]
    no_subreaper: bool,
    /// The `sorat` executable the blue-green hosts run as their router (default: the one
    /// beside this bench, as `cargo build --release -p sorat -p sorat-bench` leaves it).
    #[arg(long)]
    sorat: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ssh-deploy: {error:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------
// The SSH server.

/// The user to log in as: [`DEPLOY_USER`] when it exists and this runs as root, else the
/// user running this. Returns its name and uid (only when it is not us).
fn login_user() -> (String, Option<u32>) {
    let id = |args: &[&str]| {
        Command::new("id")
            .args(args)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    let me = id(&["-un"]).unwrap_or_else(|| "root".to_owned());
    if id(&["-u"]).as_deref() == Some("0")
        && let Some(uid) = id(&["-u", DEPLOY_USER]).and_then(|uid| uid.parse().ok())
    {
        return (DEPLOY_USER.to_owned(), Some(uid));
    }
    (me, None)
}

fn keygen(path: &Path) -> anyhow::Result<()> {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .context("ssh-keygen (package openssh-client)")?;
    if !status.success() {
        bail!("ssh-keygen failed for {}", path.display());
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// A running sshd on 127.0.0.1 and what a client needs to reach it; killed on drop.
struct Sshd {
    port: u16,
    key: PathBuf,
    known_hosts: PathBuf,
    user: String,
    uid: Option<u32>,
    log: PathBuf,
    child: Child,
}

impl Sshd {
    fn start(dir: &Path, subreaper: bool) -> anyhow::Result<Sshd> {
        if !Path::new(SSHD).exists() {
            bail!("{SSHD} is missing: install openssh-server");
        }
        if !Path::new("/run/sshd").exists() {
            std::fs::create_dir_all("/run/sshd")
                .context("/run/sshd (sshd's privilege separation folder) cannot be made")?;
        }
        let dir = dir.join("sshd");
        std::fs::create_dir_all(&dir)?;
        set_mode(&dir, 0o755)?;
        let host_key = dir.join("host_key");
        let key = dir.join("user_key");
        keygen(&host_key)?;
        keygen(&key)?;
        let authorized = dir.join("authorized_keys");
        std::fs::copy(key.with_extension("pub"), &authorized)?;
        set_mode(&authorized, 0o644)?;
        let port = free_port()?;
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {auth}\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nMaxSessions 100\n\
                 MaxStartups 100\nSubsystem sftp /usr/lib/openssh/sftp-server\nPidFile {pid}\nLogLevel ERROR\n",
                host = host_key.display(),
                auth = authorized.display(),
                pid = dir.join("sshd.pid").display(),
            ),
        )?;
        let log = dir.join("sshd.log");
        let mut command = if subreaper {
            let mut command = Command::new("python3");
            command.arg("-c").arg(SUBREAPER).arg(SSHD);
            command
        } else {
            Command::new(SSHD)
        };
        let child = command
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log)?)
            .spawn()
            .context("starting sshd")?;
        let (user, uid) = login_user();
        let sshd = Sshd {
            port,
            key,
            known_hosts: dir.join("known_hosts"),
            user,
            uid,
            log,
            child,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                bail!("sshd did not listen on {port}: {}", sshd.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let public = std::fs::read_to_string(host_key.with_extension("pub"))?;
        let mut fields = public.split_whitespace();
        let (Some(kind), Some(blob)) = (fields.next(), fields.next()) else {
            bail!("unexpected host key file: {public}");
        };
        std::fs::write(
            &sshd.known_hosts,
            format!("[127.0.0.1]:{port} {kind} {blob}\n"),
        )?;
        Ok(sshd)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A folder the login user owns.
    fn make_dir(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(path)?;
        if let Some(uid) = self.uid {
            std::os::unix::fs::chown(path, Some(uid), None)?;
        }
        Ok(())
    }

    fn target(&self, name: &str, dir: &Path) -> SshTarget {
        SshTarget {
            name: name.to_owned(),
            address: "127.0.0.1".to_owned(),
            port: self.port,
            user: Some(self.user.clone()),
            key: Some(self.key.clone()),
            known_hosts: Some(self.known_hosts.clone()),
            dir: dir.display().to_string(),
            connect_timeout: Duration::from_secs(10),
            control_dir: std::env::temp_dir(),
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // SIGTERM: the subreaper passes it on to sshd.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = self.child.wait();
    }
}

/// Kills, on drop, the services both sides left on the hosts (their process groups, from
/// the pid files: Sorat's `service/pid`, the peer's `service.pid`).
struct Services {
    hosts: Vec<PathBuf>,
}

impl Drop for Services {
    fn drop(&mut self) {
        for host in &self.hosts {
            for file in [
                "service/pid",
                "service.pid",
                "slots/blue/pid",
                "slots/green/pid",
                "router/pid",
            ] {
                let Ok(text) = std::fs::read_to_string(host.join(file)) else {
                    continue;
                };
                if let Ok(pid) = text.trim().parse::<i32>() {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The peer: ssh and scp through one master connection per host.

struct Peer<'a> {
    sshd: &'a Sshd,
    /// One control socket per host.
    sockets: Vec<PathBuf>,
}

impl Peer<'_> {
    /// The options every `ssh` and `scp` gets (the port is not here: `-p` vs `-P`).
    fn options(&self) -> Vec<String> {
        vec![
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.sshd.known_hosts.display()),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-i".into(),
            self.sshd.key.display().to_string(),
        ]
    }

    fn destination(&self) -> String {
        format!("{}@127.0.0.1", self.sshd.user)
    }

    fn open<'a>(sshd: &'a Sshd, dir: &Path) -> anyhow::Result<Peer<'a>> {
        let tag = std::process::id();
        let mut peer = Peer {
            sshd,
            sockets: Vec::new(),
        };
        for host in 0..HOSTS {
            let socket = std::env::temp_dir().join(format!("ssh-deploy-{tag}-{host}.sock"));
            let status = Command::new("ssh")
                .args(peer.options())
                .arg("-p")
                .arg(sshd.port.to_string())
                .arg("-E")
                .arg(dir.join(format!("peer-master-{host}.log")))
                .args(["-M", "-f", "-N", "-o", "ControlPersist=yes", "-S"])
                .arg(&socket)
                .arg(peer.destination())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?;
            if !status.success() {
                bail!(
                    "the peer's master connection {host} failed: {}",
                    std::fs::read_to_string(dir.join(format!("peer-master-{host}.log")))
                        .unwrap_or_default()
                );
            }
            peer.sockets.push(socket);
        }
        Ok(peer)
    }

    /// `ssh` through host `host`'s master, running `script` with the login shell.
    fn ssh(&self, host: usize, script: &str) -> Command {
        let mut command = Command::new("ssh");
        command
            .args(self.options())
            .arg("-p")
            .arg(self.sshd.port.to_string())
            .arg("-T")
            .arg("-o")
            .arg("ControlMaster=no")
            .arg("-S")
            .arg(&self.sockets[host])
            .arg(self.destination())
            .arg(script)
            .stdin(Stdio::null());
        command
    }

    fn run(&self, host: usize, script: &str) -> anyhow::Result<()> {
        checked(&mut self.ssh(host, script), script)
    }

    /// `scp -q files… host:destination` through host `host`'s master.
    fn scp(&self, host: usize, files: &[&Path], destination: &str) -> anyhow::Result<()> {
        let mut command = Command::new("scp");
        command
            .arg("-q")
            .args(self.options())
            .arg("-P")
            .arg(self.sshd.port.to_string())
            .arg("-o")
            .arg("ControlMaster=no")
            .arg("-o")
            .arg(format!("ControlPath={}", self.sockets[host].display()))
            .args(files)
            .arg(format!("{}:{destination}", self.destination()))
            .stdin(Stdio::null());
        checked(&mut command, "scp")
    }
}

impl Drop for Peer<'_> {
    fn drop(&mut self) {
        for socket in &self.sockets {
            let _ = Command::new("ssh")
                .arg("-S")
                .arg(socket)
                .args(["-O", "exit", "none"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn checked(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let output = command.stdout(Stdio::null()).output()?;
    if !output.status.success() {
        bail!(
            "`{what}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// A peer host: its folder and its service's port.
struct PeerHost {
    dir: String,
    port: u16,
}

/// Stops the old service (SIGTERM to its group, waits for it to end, polling every 20 ms as
/// Sorat's stop does) and starts the new one from `current` in its own session.
fn restart_script(host: &PeerHost) -> String {
    format!(
        r#"D={dir}
if [ -f "$D/service.pid" ]; then
  pid=$(cat "$D/service.pid")
  kill -TERM -"$pid" 2>/dev/null || true
  while kill -0 -"$pid" 2>/dev/null; do sleep 0.02; done
fi
cd "$D/current"
PORT={port} setsid python3 server.py < /dev/null >> "$D/service.log" 2>&1 &
echo $! > "$D/service.pid""#,
        dir = host.dir,
        port = host.port
    )
}

fn switch_script(host: &PeerHost, number: u32) -> String {
    format!(
        "cd {dir} && ln -sfn releases/{number} current.tmp && mv -T current.tmp current",
        dir = host.dir
    )
}

fn wait_healthy(client: &reqwest::blocking::Client, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .is_ok_and(|response| response.status().is_success())
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("port {port} never became healthy");
        }
        std::thread::sleep(HEALTH_INTERVAL);
    }
}

/// Times of one host's peer deploy or rollback, from the common start.
#[derive(Clone, Copy, Default)]
struct PeerTimes {
    /// Until `current` was switched (the copy included for a deploy).
    switched: Duration,
    /// Until the restart command returned.
    restarted: Duration,
}

/// Runs `work` for each host on its own thread; returns the wall time until all are done
/// and each host's times.
fn on_every_host(
    work: impl Fn(usize, Instant) -> anyhow::Result<PeerTimes> + Sync,
) -> anyhow::Result<(Duration, Vec<PeerTimes>)> {
    let started = Instant::now();
    let times = std::thread::scope(|scope| -> anyhow::Result<Vec<PeerTimes>> {
        let handles: Vec<_> = (0..HOSTS)
            .map(|host| {
                let work = &work;
                scope.spawn(move || work(host, started))
            })
            .collect();
        let mut times = Vec::new();
        for handle in handles {
            times.push(
                handle
                    .join()
                    .map_err(|_| anyhow!("a peer thread panicked"))??,
            );
        }
        Ok(times)
    })?;
    Ok((started.elapsed(), times))
}

fn slowest_peer(times: &[PeerTimes], pick: impl Fn(&PeerTimes) -> Duration) -> Duration {
    times.iter().map(pick).max().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Sorat.

/// The slowest host's total of `phases` in a report.
fn slowest(report: &DeployReport, phases: &[Phase]) -> Duration {
    report
        .hosts
        .iter()
        .map(|host| {
            host.timings
                .iter()
                .filter(|timing| phases.contains(&timing.phase))
                .map(|timing| timing.duration)
                .sum::<Duration>()
        })
        .max()
        .unwrap_or_default()
}

/// One Sorat deploy or rollback: its wall time and report.
struct SoratRun {
    wall: Duration,
    report: DeployReport,
    /// After the deploy, until the hosts' detached jobs had copied the uploaded files into
    /// their caches (waited for, untimed, so that no host work overlaps what is timed next).
    cached: Duration,
}

impl SoratRun {
    fn phase(&self, phases: &[Phase]) -> Duration {
        slowest(&self.report, phases)
    }
}

fn environment() -> Environment {
    Environment {
        name: "bench".to_owned(),
        service: ServiceConfig {
            command: "exec python3 server.py".to_owned(),
            working_dir: None,
            env: Vec::new(),
            restart: RestartPolicy::default(),
            stop_grace: STOP_GRACE,
        },
        health: HealthCheck {
            probe: Probe::Http {
                path: "/healthz".to_owned(),
                expected_status: 200,
            },
            interval: HEALTH_INTERVAL,
            attempt_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(60),
            success_threshold: 1,
            failure_threshold: 3,
        },
        // The new release, the one before (kept for rollbacks anyway) and one more: nothing
        // is removed inside the timed deploys; the bench prunes to two between them.
        keep_releases: 3,
        bake: None,
        judge: None,
        secrets: None,
        progress: None,
    }
}

struct Sorat {
    runtime: tokio::runtime::Runtime,
    env: Environment,
    targets: Vec<Target>,
    dirs: Vec<PathBuf>,
}

impl Sorat {
    fn deploy(&self, spec: &ReleaseSpec) -> anyhow::Result<SoratRun> {
        let started = Instant::now();
        let report =
            self.runtime
                .block_on(deploy(&self.env, &self.targets, spec, Strategy::AllAtOnce));
        let wall = started.elapsed();
        if report.outcome != Outcome::Succeeded {
            bail!("Sorat's deploy of release {}: {report:#?}", spec.number);
        }
        let cached = self.wait_for_caches()?;
        self.unwatch();
        Ok(SoratRun {
            wall,
            report,
            cached,
        })
    }

    fn rollback(&self, to: u32) -> anyhow::Result<SoratRun> {
        let started = Instant::now();
        let report = self
            .runtime
            .block_on(rollback(&self.env, &self.targets, Some(to)))?;
        let wall = started.elapsed();
        if report.outcome != Outcome::Succeeded {
            bail!("Sorat's rollback to {to}: {report:#?}");
        }
        self.unwatch();
        Ok(SoratRun {
            wall,
            report,
            cached: Duration::ZERO,
        })
    }

    /// Waits until no host has a cache job left (its list file is removed when it ends).
    fn wait_for_caches(&self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            let pending = self.dirs.iter().any(|dir| {
                std::fs::read_dir(dir.join("blobs/sha256")).is_ok_and(|entries| {
                    entries
                        .flatten()
                        .any(|entry| entry.file_name().to_string_lossy().starts_with(".cache"))
                })
            });
            if !pending {
                return Ok(started.elapsed());
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!("the hosts' cache jobs did not end within 2 minutes");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops watching the services (they keep running on the hosts), so that Sorat's state
    /// polls over SSH do not run while the peer is timed; the connections stay open, as the
    /// peer's masters do.
    fn unwatch(&self) {
        self.runtime.block_on(async {
            for target in &self.targets {
                target.unwatch().await;
            }
        });
    }

    /// Keeps the last two releases on each host (untimed).
    fn prune(&self) -> anyhow::Result<()> {
        self.runtime.block_on(async {
            for target in &self.targets {
                if let Some(host) = target.ssh_host() {
                    host.prune(2, &[]).await?;
                }
            }
            anyhow::Ok(())
        })
    }

    fn stop(&self) {
        self.runtime.block_on(async {
            for target in &self.targets {
                target.stop(STOP_GRACE).await;
            }
        });
    }
}

// ---------------------------------------------------------------------------------------
// Inputs.

/// Writes `size` random bytes from `seed` to `path`, flushed to disk; returns their digest.
fn write_artifact(path: &Path, size: u64, seed: u64) -> anyhow::Result<String> {
    let mut rng = SplitMix64::new(seed);
    let mut file = File::create(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let take = usize::try_from(left.min(buffer.len() as u64))?;
        rng.fill(&mut buffer[..take]);
        hasher.update(&buffer[..take]);
        file.write_all(&buffer[..take])?;
        left -= take as u64;
    }
    file.sync_all()?;
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// A release of `artifact` (with its digest) and the service.
fn release(number: u32, artifact: &Path, digest: &str, service: &ReleaseFile) -> ReleaseSpec {
    ReleaseSpec {
        number,
        meta: ReleaseMeta {
            artifact: format!("app@{number}"),
            digest: digest.to_owned(),
            who: "ssh-deploy bench".to_owned(),
            config: None,
        },
        files: vec![
            ReleaseFile {
                path: PathBuf::from("app.bin"),
                source: artifact.to_path_buf(),
                mode: 0o644,
                digest: digest.to_owned(),
            },
            service.clone(),
        ],
    }
}

/// Flushes every dirty page (untimed), so a timed step does not flush another's.
fn sync() {
    nix::unistd::sync();
}

// ---------------------------------------------------------------------------------------
// The steps of an upload, one by one.

const STEPS: [&str; 16] = [
    "ssh round trip through the master (`true`)",
    "upload, the file as ssh's stdin: `ssh 'cat > f' < file`",
    "upload as ssh.rs feeds it: `tokio::io::copy(tokio::fs::File → ssh's stdin pipe)` into `cat > f`",
    "the same through a 1 MiB `BufReader` (`tokio::io::copy_buf`)",
    "upload, then hash the written file: `ssh 'cat > f && sha256sum < f' < file`",
    "upload, then hash with OpenSSL: `ssh 'cat > f && openssl dgst -sha256 < f' < file`",
    "upload, fsync, then hash with OpenSSL (ssh.rs before): `cat > f; sync f; openssl dgst < f`",
    "upload, then fsync and hash at once (ssh.rs now): `cat > f; (sync f) & openssl dgst < f; wait`",
    "upload + hash with OpenSSL: `ssh '{ tee f \\|\\| :; } \\| openssl dgst -sha256' < file`",
    "upload + hash as Sorat's remote script: `ssh '{ tee f \\|\\| :; } \\| sha256sum' < file`",
    "fsync of that upload: `sync f` (right after it, as Sorat does)",
    "`cp --reflink=auto` blob → release (no reflink on ext4: a full copy)",
    "`sync -f` right after that copy (syncfs, as Sorat's prepare does)",
    "`sha256sum < f` of a present blob (Sorat's check before reuse)",
    "`openssl dgst -sha256 < f` of the same blob",
    "`scp -q file host:f` (the peer's copy)",
];

/// An upload the way `SshHost::run` feeds a file (a tokio file copied into the ssh child's
/// stdin pipe, with tokio's 8 KiB copy buffer), or through a 1 MiB `BufReader`; every host
/// at once, into `cat > f`.
fn tokio_upload(
    peer: &Peer<'_>,
    runtime: &tokio::runtime::Runtime,
    scratch: &[String],
    artifact: &Path,
    buffered: bool,
) -> anyhow::Result<Duration> {
    sync();
    let started = Instant::now();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for (host, dir) in scratch.iter().enumerate() {
            let mut command =
                tokio::process::Command::from(peer.ssh(host, &format!("cat > {dir}/tokio")));
            command
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let mut child = command.spawn()?;
            let mut stdin = child.stdin.take().context("no stdin")?;
            let path = artifact.to_path_buf();
            tasks.push(tokio::spawn(async move {
                let mut file = tokio::fs::File::open(&path).await?;
                if buffered {
                    let mut reader = tokio::io::BufReader::with_capacity(1 << 20, file);
                    tokio::io::copy_buf(&mut reader, &mut stdin).await?;
                } else {
                    tokio::io::copy(&mut file, &mut stdin).await?;
                }
                tokio::io::AsyncWriteExt::shutdown(&mut stdin).await?;
                drop(stdin);
                let output = child.wait_with_output().await?;
                if !output.status.success() {
                    bail!(
                        "tokio upload: {}",
                        String::from_utf8_lossy(&output.stderr).trim()
                    );
                }
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        anyhow::Ok(())
    })?;
    Ok(started.elapsed())
}

/// Each step on every host at once; the slowest host's time per step. A `sync` runs before
/// each step, except before the two that flush what the step before them wrote.
fn breakdown(
    peer: &Peer<'_>,
    runtime: &tokio::runtime::Runtime,
    scratch: &[String],
    artifact: &Path,
) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::new();
    let step = |flush_first: bool,
                work: &(dyn Fn(usize) -> anyhow::Result<()> + Sync)|
     -> anyhow::Result<Duration> {
        if flush_first {
            sync();
        }
        let (wall, _) = on_every_host(|host, _| {
            work(host)?;
            Ok(PeerTimes::default())
        })?;
        Ok(wall)
    };
    let piped = |host: usize, script: &str| -> anyhow::Result<()> {
        let mut command = peer.ssh(host, script);
        command.stdin(File::open(artifact)?);
        checked(&mut command, script)
    };
    let hash_upload = |host: usize, hasher: &str| {
        piped(
            host,
            &format!(
                "set -e; sum=$( {{ tee {d}/blob || : > {d}/failed; }} | {hasher} ); echo $sum > /dev/null",
                d = scratch[host]
            ),
        )
    };
    times.push(step(true, &|host| peer.run(host, "true"))?);
    times.push(step(true, &|host| {
        piped(host, &format!("cat > {}/plain", scratch[host]))
    })?);
    times.push(tokio_upload(peer, runtime, scratch, artifact, false)?);
    times.push(tokio_upload(peer, runtime, scratch, artifact, true)?);
    let then_hash = |host: usize, hasher: &str| {
        piped(
            host,
            &format!(
                "set -e; cat > {d}/then; {hasher} < {d}/then > /dev/null",
                d = scratch[host]
            ),
        )
    };
    times.push(step(true, &|host| then_hash(host, "sha256sum"))?);
    times.push(step(true, &|host| then_hash(host, "openssl dgst -sha256"))?);
    times.push(step(true, &|host| {
        piped(
            host,
            &format!(
                "set -e; cat > {d}/seq; sync {d}/seq; openssl dgst -sha256 -r < {d}/seq > /dev/null",
                d = scratch[host]
            ),
        )
    })?);
    times.push(step(true, &|host| {
        piped(
            host,
            &format!(
                "set -e; cat > {d}/par; ( sync {d}/par ) & s=$!; openssl dgst -sha256 -r < {d}/par > /dev/null; wait $s",
                d = scratch[host]
            ),
        )
    })?);
    times.push(step(true, &|host| {
        hash_upload(host, "openssl dgst -sha256")
    })?);
    times.push(step(true, &|host| hash_upload(host, "sha256sum"))?);
    times.push(step(false, &|host| {
        peer.run(host, &format!("sync {}/blob", scratch[host]))
    })?);
    times.push(step(true, &|host| {
        peer.run(
            host,
            &format!("cp --reflink=auto {d}/blob {d}/copy", d = scratch[host]),
        )
    })?);
    times.push(step(false, &|host| {
        peer.run(host, &format!("sync -f {}", scratch[host]))
    })?);
    times.push(step(true, &|host| {
        peer.run(
            host,
            &format!("sha256sum < {}/blob > /dev/null", scratch[host]),
        )
    })?);
    times.push(step(true, &|host| {
        peer.run(
            host,
            &format!("openssl dgst -sha256 < {}/blob > /dev/null", scratch[host]),
        )
    })?);
    times.push(step(true, &|host| {
        peer.scp(host, &[artifact], &format!("{}/scp", scratch[host]))
    })?);
    on_every_host(|host, _| {
        peer.run(host, &format!("rm -f {}/*", scratch[host]))?;
        Ok(PeerTimes::default())
    })?;
    Ok(times)
}

// ---------------------------------------------------------------------------------------

fn run(args: &Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.work_dir)?;
    let temp = tempfile::Builder::new()
        .prefix("ssh-deploy-")
        .tempdir_in(&args.work_dir)?;
    // The login user walks into it.
    set_mode(temp.path(), 0o755)?;
    let size = args.size_mib << 20;
    let sshd = Sshd::start(temp.path(), !args.no_subreaper)?;
    eprintln!(
        "sshd on 127.0.0.1:{}, logging in as {}",
        sshd.port, sshd.user
    );
    let hosts_dir = temp.path().join("hosts");
    sshd.make_dir(&hosts_dir)?;
    let sorat_dirs: Vec<PathBuf> = (0..HOSTS)
        .map(|i| hosts_dir.join(format!("s{i}")))
        .collect();
    let blue_green_dirs: Vec<PathBuf> = (0..HOSTS)
        .map(|i| hosts_dir.join(format!("b{i}")))
        .collect();
    let peer_dirs: Vec<PathBuf> = (0..HOSTS)
        .map(|i| hosts_dir.join(format!("p{i}")))
        .collect();
    let scratch: Vec<String> = (0..HOSTS)
        .map(|i| hosts_dir.join(format!("x{i}")).display().to_string())
        .collect();
    for dir in peer_dirs.iter().chain(&sorat_dirs).chain(&blue_green_dirs) {
        sshd.make_dir(dir)?;
    }
    for dir in &scratch {
        sshd.make_dir(Path::new(dir))?;
    }
    let _services = Services {
        hosts: sorat_dirs
            .iter()
            .chain(&peer_dirs)
            .chain(&blue_green_dirs)
            .cloned()
            .collect(),
    };

    // Inputs: the service (the same in every release) and a folder for the artifacts.
    let src = temp.path().join("src");
    std::fs::create_dir_all(&src)?;
    let service_path = src.join("server.py");
    std::fs::write(&service_path, SERVICE)?;
    let service = ReleaseFile {
        path: PathBuf::from("server.py"),
        source: service_path.clone(),
        mode: 0o644,
        digest: format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(SERVICE.as_bytes()))
        ),
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let sorat = Sorat {
        runtime,
        dirs: sorat_dirs.clone(),
        env: environment(),
        targets: sorat_dirs
            .iter()
            .enumerate()
            .map(|(i, dir)| {
                Ok(Target::ssh(
                    SshHost::new(sshd.target(&format!("s{i}"), dir)),
                    free_port()?,
                ))
            })
            .collect::<anyhow::Result<_>>()?,
    };
    let peer = Peer::open(&sshd, temp.path())?;
    let peer_hosts: Vec<PeerHost> = peer_dirs
        .iter()
        .map(|dir| {
            Ok(PeerHost {
                dir: dir.display().to_string(),
                port: free_port()?,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()?;

    let peer_deploy = |number: u32, artifact: &Path| {
        on_every_host(|host, started| {
            let target = &peer_hosts[host];
            let folder = format!("{}/releases/{number}", target.dir);
            peer.run(host, &format!("mkdir -p {folder}"))?;
            peer.scp(host, &[artifact, &service_path], &format!("{folder}/"))?;
            peer.run(host, &switch_script(target, number))?;
            let switched = started.elapsed();
            peer.run(host, &restart_script(target))?;
            let restarted = started.elapsed();
            wait_healthy(&client, target.port)?;
            Ok(PeerTimes {
                switched,
                restarted,
            })
        })
    };
    let peer_prune = |numbers: &[u32]| {
        on_every_host(|host, _| {
            for number in numbers {
                peer.run(
                    host,
                    &format!("rm -rf {}/releases/{number}", peer_hosts[host].dir),
                )?;
            }
            Ok(PeerTimes::default())
        })
    };

    // Warm-up, untimed: the connections open, the services run release 1 on every host.
    eprintln!("warm-up: release 1 on both sides");
    let warm = src.join("warm.bin");
    let warm_digest = write_artifact(&warm, size, u64::MAX)?;
    sorat.deploy(&release(1, &warm, &warm_digest, &service))?;
    peer_deploy(1, &warm)?;
    std::fs::remove_file(&warm)?;

    let mut sorat_new = Vec::new();
    let mut sorat_present = Vec::new();
    let mut peer_runs = Vec::new();
    let mut steps: Vec<Vec<Duration>> = vec![Vec::new(); STEPS.len()];
    let mut sorat_number = 1;
    let mut peer_numbers = vec![1];
    for round in 0..args.rounds {
        let artifact = src.join(format!("app-{round}.bin"));
        let digest = write_artifact(&artifact, size, round as u64)?;
        let sorat_side = |new: &mut Vec<SoratRun>, present: &mut Vec<SoratRun>, number: u32| {
            sync();
            let spec = release(number, &artifact, &digest, &service);
            new.push(sorat.deploy(&spec)?);
            sorat.prune()?;
            sync();
            // The same content under the next number: the blob is on the hosts already.
            let spec = release(number + 1, &artifact, &digest, &service);
            present.push(sorat.deploy(&spec)?);
            sorat.prune()
        };
        let mut peer_side = |runs: &mut Vec<(Duration, Vec<PeerTimes>)>| {
            sync();
            let number = peer_numbers.last().copied().unwrap_or(0) + 1;
            runs.push(peer_deploy(number, &artifact)?);
            peer_numbers.push(number);
            if peer_numbers.len() > 2 {
                let old: Vec<u32> = peer_numbers.drain(..peer_numbers.len() - 2).collect();
                peer_prune(&old)?;
            }
            anyhow::Ok(())
        };
        if round % 2 == 0 {
            sorat_side(&mut sorat_new, &mut sorat_present, sorat_number + 1)?;
            peer_side(&mut peer_runs)?;
        } else {
            peer_side(&mut peer_runs)?;
            sorat_side(&mut sorat_new, &mut sorat_present, sorat_number + 1)?;
        }
        sorat_number += 2;
        if !args.no_breakdown {
            for (step, time) in breakdown(&peer, &sorat.runtime, &scratch, &artifact)?
                .into_iter()
                .enumerate()
            {
                steps[step].push(time);
            }
        }
        std::fs::remove_file(&artifact)?;
        let (Some(sorat_run), Some(peer_run)) = (sorat_new.last(), peer_runs.last()) else {
            bail!("no run recorded");
        };
        eprintln!(
            "round {}/{}: Sorat {} (prepare {}), blob present {}, peer {} (copy+switch {})",
            round + 1,
            args.rounds,
            millis(sorat_run.wall),
            millis(sorat_run.phase(&[Phase::Prepare])),
            millis(sorat_present.last().map_or(Duration::ZERO, |run| run.wall)),
            millis(peer_run.0),
            millis(slowest_peer(&peer_run.1, |times| times.switched)),
        );
    }

    // Rollbacks between the last two releases on each side.
    eprintln!("rollbacks: {} per side", args.rollbacks);
    let mut sorat_rollbacks = Vec::new();
    let mut peer_rollbacks = Vec::new();
    let (Some(&peer_previous), Some(&peer_last)) = (
        peer_numbers.get(peer_numbers.len().saturating_sub(2)),
        peer_numbers.last(),
    ) else {
        bail!("the peer has no two releases");
    };
    let peer_rollback = |to: u32| {
        on_every_host(|host, started| {
            let target = &peer_hosts[host];
            peer.run(host, &switch_script(target, to))?;
            let switched = started.elapsed();
            peer.run(host, &restart_script(target))?;
            let restarted = started.elapsed();
            wait_healthy(&client, target.port)?;
            Ok(PeerTimes {
                switched,
                restarted,
            })
        })
    };
    for round in 0..args.rollbacks {
        let (sorat_to, peer_to) = if round % 2 == 0 {
            (sorat_number - 1, peer_previous)
        } else {
            (sorat_number, peer_last)
        };
        if round % 2 == 0 {
            sync();
            sorat_rollbacks.push(sorat.rollback(sorat_to)?);
            sync();
            peer_rollbacks.push(peer_rollback(peer_to)?);
        } else {
            sync();
            peer_rollbacks.push(peer_rollback(peer_to)?);
            sync();
            sorat_rollbacks.push(sorat.rollback(sorat_to)?);
        }
    }
    sorat.stop();
    drop(peer);

    // Blue-green rollbacks: two releases of a small artifact on three more hosts, then
    // rollbacks between them, each a switch back to the release still running.
    let router = match &args.sorat {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the bench's folder")?
            .join("sorat"),
    };
    if !router.exists() {
        bail!(
            "{} is missing: build it (`cargo build --release -p sorat -p sorat-bench`) or give --sorat",
            router.display()
        );
    }
    let blue_green = Sorat {
        runtime: sorat.runtime,
        dirs: blue_green_dirs.clone(),
        env: environment(),
        targets: blue_green_dirs
            .iter()
            .enumerate()
            .map(|(i, dir)| {
                Ok(Target::ssh(
                    SshHost::new(sshd.target(&format!("b{i}"), dir)).with_router(router.clone()),
                    free_port()?,
                )
                .with_slots(BlueGreenSlots {
                    ports: [free_port()?, free_port()?],
                    listen: std::net::IpAddr::from([127, 0, 0, 1]),
                    scale_down_delay: Duration::from_secs(600),
                }))
            })
            .collect::<anyhow::Result<_>>()?,
    };
    let small = src.join("small.bin");
    let small_digest = write_artifact(&small, 1 << 20, 7)?;
    for number in [1, 2] {
        let started = Instant::now();
        let report = blue_green.runtime.block_on(deploy(
            &blue_green.env,
            &blue_green.targets,
            &release(number, &small, &small_digest, &service),
            Strategy::BlueGreen {
                pre_promotion: None,
                auto_promote: true,
            },
        ));
        if report.outcome != Outcome::Succeeded {
            bail!("Sorat's blue-green deploy of release {number}: {report:#?}");
        }
        eprintln!(
            "blue-green release {number} deployed in {}",
            millis(started.elapsed())
        );
    }
    let mut blue_green_rollbacks = Vec::new();
    for round in 0..args.rollbacks {
        sync();
        let to = if round % 2 == 0 { 1 } else { 2 };
        let started = Instant::now();
        let report = blue_green.runtime.block_on(rollback(
            &blue_green.env,
            &blue_green.targets,
            Some(to),
        ))?;
        let wall = started.elapsed();
        if report.outcome != Outcome::Succeeded {
            bail!("Sorat's blue-green rollback to {to}: {report:#?}");
        }
        // A switch back, not a start: the release was still running.
        let restarted = report.hosts.iter().any(|host| {
            host.timings.iter().any(|timing| {
                timing.phase == Phase::RollbackHealth && timing.duration > Duration::from_secs(1)
            })
        });
        if restarted {
            bail!("a blue-green rollback waited for a start-up: {report:#?}");
        }
        blue_green_rollbacks.push(SoratRun {
            wall,
            report,
            cached: Duration::ZERO,
        });
    }
    blue_green.stop();

    // The report.
    let walls = |runs: &[SoratRun]| runs.iter().map(|run| run.wall).collect::<Vec<_>>();
    let phases = |runs: &[SoratRun], phases: &[Phase]| {
        runs.iter().map(|run| run.phase(phases)).collect::<Vec<_>>()
    };
    let row = |table: &mut Table, label: &str, times: &[Duration]| {
        table.row(vec![
            label.to_owned(),
            millis(median(times)),
            millis(percentile(times, 0.9)),
            millis(times.iter().max().copied().unwrap_or_default()),
        ]);
    };
    let sorat_wall = walls(&sorat_new);
    let peer_wall: Vec<Duration> = peer_runs.iter().map(|run| run.0).collect();
    let present_wall = walls(&sorat_present);
    let sorat_copy: Vec<Duration> = sorat_new
        .iter()
        .map(|run| run.phase(&[Phase::Prepare]) + run.phase(&[Phase::Switch]))
        .collect();
    let present_copy: Vec<Duration> = sorat_present
        .iter()
        .map(|run| run.phase(&[Phase::Prepare]) + run.phase(&[Phase::Switch]))
        .collect();
    let peer_copy: Vec<Duration> = peer_runs
        .iter()
        .map(|run| slowest_peer(&run.1, |times| times.switched))
        .collect();

    println!(
        "## Deploy of a {} MiB artifact to {HOSTS} SSH hosts ({} rounds each)\n",
        args.size_mib, args.rounds
    );
    println!(
        "sshd {}, login {}, one master connection per host on both sides.\n",
        if args.no_subreaper {
            "run directly (ended services wait for PID 1 to reap them)"
        } else {
            "under a subreaper (ended services are reaped at once)"
        },
        sshd.user
    );
    let mut table = Table::new(&["deploy to 3 SSH hosts", "median", "p90", "max"]);
    row(
        &mut table,
        "Sorat, new content: deploy() → report (every host healthy)",
        &sorat_wall,
    );
    row(
        &mut table,
        "peer: mkdir + scp + ln -sfn/mv -T + restart + poll /healthz",
        &peer_wall,
    );
    row(
        &mut table,
        "Sorat, same content, new number (blob on the hosts)",
        &present_wall,
    );
    row(
        &mut table,
        "Sorat copy + switch: Prepare + Switch (slowest host each)",
        &sorat_copy,
    );
    row(
        &mut table,
        "peer copy + switch: mkdir + scp + ln -sfn/mv -T (slowest host)",
        &peer_copy,
    );
    row(
        &mut table,
        "Sorat copy + switch, blob on the hosts",
        &present_copy,
    );
    print!("{}", table.render());
    println!(
        "\nSorat ÷ peer (medians; target ≤ 1.20x): whole deploy {}, copy + switch {}; \
         with the blob already on the hosts: whole {}, copy + switch {}.",
        ratio(median(&sorat_wall), median(&peer_wall)),
        ratio(median(&sorat_copy), median(&peer_copy)),
        ratio(median(&present_wall), median(&peer_wall)),
        ratio(median(&present_copy), median(&peer_copy)),
    );

    let cached: Vec<Duration> = sorat_new.iter().map(|run| run.cached).collect();
    println!(
        "\nAfter a new-content deploy the hosts copy the uploaded file into their caches, off the \
         deploy's path (waited for, untimed, before anything else is timed): {} (median).",
        millis(median(&cached))
    );

    println!("\n### Sorat's phases (slowest host per phase, medians)\n");
    let mut table = Table::new(&["phase", "new content", "blob on the hosts"]);
    for (label, phase) in [
        (
            "Prepare (state, blob check, upload, release.json, syncs)",
            Phase::Prepare,
        ),
        ("Switch", Phase::Switch),
        ("Restart (stop old, start new)", Phase::Restart),
        ("Health (the service's start-up)", Phase::Health),
    ] {
        table.row(vec![
            label.to_owned(),
            millis(median(&phases(&sorat_new, &[phase]))),
            millis(median(&phases(&sorat_present, &[phase]))),
        ]);
    }
    let outside = |runs: &[SoratRun]| {
        runs.iter()
            .map(|run| {
                run.wall.saturating_sub(
                    run.phase(&[Phase::Prepare])
                        + run.phase(&[Phase::Switch, Phase::Restart, Phase::Health]),
                )
            })
            .collect::<Vec<_>>()
    };
    table.row(vec![
        "outside the phases (current, set_status, prune scan)".to_owned(),
        millis(median(&outside(&sorat_new))),
        millis(median(&outside(&sorat_present))),
    ]);
    print!("{}", table.render());
    let peer_restart: Vec<Duration> = peer_runs
        .iter()
        .map(|run| {
            slowest_peer(&run.1, |times| {
                times.restarted.saturating_sub(times.switched)
            })
        })
        .collect();
    println!(
        "\nThe peer's restart command (slowest host, median): {}.",
        millis(median(&peer_restart))
    );

    if !args.no_breakdown {
        println!(
            "\n### The upload's steps, on {HOSTS} hosts at once (slowest host, {} rounds)\n",
            args.rounds
        );
        let mut table = Table::new(&["step", "median", "p90"]);
        for (label, times) in STEPS.iter().zip(&steps) {
            table.row(vec![
                (*label).to_owned(),
                millis(median(times)),
                millis(percentile(times, 0.9)),
            ]);
        }
        print!("{}", table.render());
    }

    println!(
        "\n## Rollback on {HOSTS} SSH hosts ({} rounds each)\n",
        args.rollbacks
    );
    let sorat_wall = walls(&sorat_rollbacks);
    let sorat_own = phases(
        &sorat_rollbacks,
        &[Phase::RollbackSwitch, Phase::RollbackRestart],
    );
    let peer_wall: Vec<Duration> = peer_rollbacks.iter().map(|run| run.0).collect();
    let peer_own: Vec<Duration> = peer_rollbacks
        .iter()
        .map(|run| slowest_peer(&run.1, |times| times.restarted))
        .collect();
    let mut table = Table::new(&["rollback of 3 SSH hosts", "median", "p90", "max"]);
    row(
        &mut table,
        "Sorat: rollback() → every host healthy",
        &sorat_wall,
    );
    row(
        &mut table,
        "Sorat's own part (RollbackSwitch + RollbackRestart, slowest host)",
        &sorat_own,
    );
    row(
        &mut table,
        "peer: ssh ln -sfn/mv -T, ssh restart, poll /healthz",
        &peer_wall,
    );
    row(
        &mut table,
        "peer's own part (switch + restart commands, slowest host)",
        &peer_own,
    );
    let blue_green_wall = walls(&blue_green_rollbacks);
    let blue_green_switch = phases(&blue_green_rollbacks, &[Phase::RollbackSwitch]);
    row(
        &mut table,
        "Sorat blue-green: rollback() → routers switched back",
        &blue_green_wall,
    );
    row(
        &mut table,
        "Sorat blue-green: router switch + `current` (slowest host)",
        &blue_green_switch,
    );
    print!("{}", table.render());
    println!(
        "\nSorat ÷ peer (medians): whole rollback {}, own part {}; blue-green rollback {}.",
        ratio(median(&sorat_wall), median(&peer_wall)),
        ratio(median(&sorat_own), median(&peer_own)),
        ratio(median(&blue_green_wall), median(&peer_wall)),
    );
    Ok(())
}

//! Hosts reached over SSH: the same layout as a local host (`releases/<n>/`, `current`,
//! `releases/.last`), kept by short POSIX `sh` scripts run through one multiplexed OpenSSH
//! connection per host.
//!
//! The connection is OpenSSH's own client (through the `openssh` crate): key authentication
//! with `BatchMode`, strict known-hosts checking against the given file, and everything the
//! user's `~/.ssh/config` says (jump hosts, ciphers). One master connection per host carries
//! every command, so a command costs a round trip, not a handshake.
//!
//! Files go to a host once. A file whose blob the host lacks is streamed straight into the
//! new release's folder (the local file is ssh's stdin as it is), fsynced, then hashed on
//! the host (OpenSSL when present, else coreutils); a digest that differs removes the
//! partial release and fails the prepare. After a successful deploy, the prune starts a
//! detached, low-priority job on the host that copies each uploaded file into the cache, `blobs/sha256/<hex>`, hashing the copy
//! again before renaming it there; the copy is off the deploy's path, and a later release
//! with the same content is built from the cache. Files built from the cache are copies
//! (`cp --reflink=auto`), so a service that writes to its files cannot damage the cache, and a
//! blob already present is verified again before use.
//!
//! The service runs under a small `sh` supervisor started with `setsid` (its own session and
//! process group, detached from the SSH connection): it restarts the command with doubling
//! backoff, gives up after repeated quick failures, and writes its state to
//! `service/state` and the output to `service/log`. A stop sends SIGTERM to the group, then
//! SIGKILL after the grace period.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder, Stdio};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, mpsc, watch};

use crate::deploy::ServiceConfig;
use crate::release::{
    RELEASE_JSON, RecordedFile, ReleaseError, ReleaseFile, ReleaseMeta, ReleaseRecord,
    ReleaseStatus, parse_digest,
};
use crate::service::{ServiceLine, ServiceState, StopOutcome, Stream};

/// How to reach a host over SSH, and where its releases live there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshTarget {
    /// The host's name in reports.
    pub name: String,
    /// The address to connect to (a name or an IP address); health checks use it too.
    pub address: String,
    /// The SSH port.
    pub port: u16,
    /// The user to log in as (default: the SSH configuration's, then the local user).
    pub user: Option<String>,
    /// The private key to authenticate with (only that key is offered).
    pub key: Option<PathBuf>,
    /// The known-hosts file that must hold the host's key (default `~/.ssh/known_hosts`).
    pub known_hosts: Option<PathBuf>,
    /// The folder on the host that holds `releases/` and `current` (relative paths are from
    /// the user's home).
    pub dir: String,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// Where the local control socket of the connection goes (short path: sockets have a
    /// length limit).
    pub control_dir: PathBuf,
}

/// A host reached over SSH, with its connection (opened on first use, reopened after a
/// failure).
#[derive(Debug)]
pub struct SshHost {
    target: SshTarget,
    /// The size past which the service's log is moved to `log.1` once read.
    log_limit: u64,
    /// The connection and when it was last used.
    session: Mutex<Option<(Arc<Session>, std::time::Instant)>>,
    /// The name of the router executable known to be on the host.
    router_uploaded: Mutex<Option<String>>,
    /// The executable a blue-green router runs on the host (Sorat's own).
    router_binary: Option<PathBuf>,
}

/// `folder` (under the root) joined with the service's `working_dir`, when it has one.
fn within(folder: String, service: &ServiceConfig) -> String {
    match &service.working_dir {
        Some(dir) => format!("{folder}/{dir}"),
        None => folder,
    }
}

/// What runs in a blue-green SSH target's units, as [`SshHost::slot_status`] read it.
#[derive(Debug, Default)]
pub(crate) struct RemoteSlots {
    /// The slot port the router confirmed last, when the router runs.
    pub(crate) routed_port: Option<u16>,
    /// The release running in each slot, when one runs.
    pub(crate) slots: [Option<u32>; 2],
}

/// The SHA-256 (hex) of an executable, read once per process (Sorat's own is large).
async fn executable_digest(path: &Path) -> Result<String, ReleaseError> {
    static KNOWN: std::sync::Mutex<Vec<(PathBuf, String)>> = std::sync::Mutex::new(Vec::new());
    if let Ok(known) = KNOWN.lock()
        && let Some((_, hex)) = known.iter().find(|(known, _)| known == path)
    {
        return Ok(hex.clone());
    }
    let owned = path.to_path_buf();
    let io_error = |source| ReleaseError::Io {
        action: "cannot read the router executable",
        path: path.to_path_buf(),
        source,
    };
    let digest = tokio::task::spawn_blocking(move || crate::release::digest_file(&owned))
        .await
        .map_err(|error| io_error(std::io::Error::other(error.to_string())))?
        .map_err(io_error)?;
    let hex = digest.trim_start_matches("sha256:").to_owned();
    if let Ok(mut known) = KNOWN.lock() {
        known.push((path.to_path_buf(), hex.clone()));
    }
    Ok(hex)
}

/// The systems and machines, as `uname -s` and `uname -m` name them, that run an executable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Platform {
    /// `uname -s` (none: the executable does not say).
    system: Option<&'static str>,
    /// The `uname -m` names of its architecture; the first is shown.
    machines: &'static [&'static str],
}

impl Platform {
    /// What runs the ELF executable whose first bytes are `head`; none when that cannot be
    /// told (not ELF, or an architecture not listed here), and then the host is not asked.
    fn of_elf(head: &[u8]) -> Option<Platform> {
        use object::elf::{self, FileHeader32, FileHeader64};
        use object::read::elf::FileHeader;
        fn fields<H: FileHeader>(head: &[u8]) -> Option<(elf::Machine, u8, bool)> {
            let header = H::parse(head).ok()?;
            let endian = header.endian().ok()?;
            Some((
                header.e_machine(endian),
                header.e_ident().os_abi.0,
                header.is_type_64(),
            ))
        }
        let (machine, os_abi, wide) = match object::FileKind::parse(head).ok()? {
            object::FileKind::Elf32 => fields::<FileHeader32<object::Endianness>>(head)?,
            object::FileKind::Elf64 => fields::<FileHeader64<object::Endianness>>(head)?,
            _ => return None,
        };
        let machines: &'static [&'static str] = match (machine, wide) {
            (elf::EM_X86_64, true) => &["x86_64", "amd64"],
            (elf::EM_386, false) => &["i686", "i386", "i486", "i586"],
            (elf::EM_AARCH64, true) => &["aarch64", "arm64"],
            (elf::EM_ARM, false) => &["armv7l", "armv6l", "armv8l", "arm"],
            (elf::EM_RISCV, true) => &["riscv64"],
            (elf::EM_PPC64, true) => &["ppc64le", "ppc64"],
            (elf::EM_S390, true) => &["s390x"],
            (elf::EM_LOONGARCH, true) => &["loongarch64"],
            _ => return None,
        };
        // Linux executables mostly say "System V" (0); GNU (3) is Linux too.
        let system = match elf::OsAbi(os_abi) {
            elf::ELFOSABI_SYSV | elf::ELFOSABI_GNU => Some("Linux"),
            elf::ELFOSABI_FREEBSD => Some("FreeBSD"),
            elf::ELFOSABI_NETBSD => Some("NetBSD"),
            elf::ELFOSABI_OPENBSD => Some("OpenBSD"),
            _ => None,
        };
        Some(Platform { system, machines })
    }

    /// Whether a host whose `uname -sm` printed `uname` runs it.
    fn runs_on(&self, uname: &str) -> bool {
        let mut words = uname.split_whitespace();
        let (Some(system), Some(machine)) = (words.next(), words.next()) else {
            // A host that cannot say is left to try.
            return true;
        };
        self.system.is_none_or(|own| own == system) && self.machines.contains(&machine)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(system) = self.system {
            write!(formatter, "{system} ")?;
        }
        formatter.write_str(self.machines.first().copied().unwrap_or("?"))
    }
}

/// The platform of the executable at `path`, from its first bytes.
async fn executable_platform(path: &Path) -> Option<Platform> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::with_capacity(64);
    let file = tokio::fs::File::open(path).await.ok()?;
    file.take(64).read_to_end(&mut head).await.ok()?;
    Platform::of_elf(&head)
}

/// How long the master connection stays after its last command: a Sorat that ends without
/// closing it (killed) leaves no process behind for longer than this.
const CONTROL_PERSIST: std::num::NonZeroUsize = match std::num::NonZeroUsize::new(120) {
    Some(seconds) => seconds,
    None => std::num::NonZeroUsize::MIN,
};

/// A connection unused this long is checked before it is used again.
const IDLE_CHECK: Duration = Duration::from_secs(60);

/// What the remote `sh` writes to stdout and stderr, and how it ended.
struct Ran {
    stdout: String,
    /// The same, as the bytes it was.
    stdout_bytes: Vec<u8>,
    stderr: String,
    code: Option<i32>,
}

impl Ran {
    /// Why the command failed: what it wrote to stderr, else its exit code.
    fn failure(self) -> String {
        if self.stderr.is_empty() {
            format!("exited with code {:?}", self.code)
        } else {
            self.stderr
        }
    }
}

/// The folder (under a host's root) of a target's service: its supervisor's `pid`, `state`,
/// `release` and `log`.
const SERVICE_UNIT: &str = "service";
/// The folders of a blue-green target's two slots' services, as [`SERVICE_UNIT`].
const SLOT_UNITS: [&str; 2] = ["slots/blue", "slots/green"];
/// The folder of a blue-green target's router: its supervisor's files, the uploaded
/// executable, and the router's own (`backend`, `routed`, `router.pid`).
const ROUTER_UNIT: &str = "router";

/// `sh -c` prefix shared by every remote script: fail on the first error, `R` is the root;
/// `hash FILE` prints a file's SHA-256 in hex (OpenSSL's when the host has it: it uses the
/// CPU's SHA instructions, coreutils' does not); `fsync PATH...` makes what was written
/// durable, file by file (not the whole file system); `alive PGID` says whether a process
/// group still has a process that is not a zombie.
const PRELUDE: &str = r#"set -eu
R=$1
shift
hash() {
  if command -v openssl >/dev/null 2>&1; then h=$(openssl dgst -sha256 -r < "$1"); else h=$(sha256sum < "$1"); fi
  echo "${h%% *}"
}
fsync() { sync -- "$@" 2>/dev/null || sync; }
# A process group is alive while it has a process that is not a zombie (a host whose init
# reaps slowly keeps zombies around, and `kill -0` counts them): a group `kill -0` does not
# find is gone at once, one it finds is looked for among the processes.
alive() {
  kill -0 -"$1" 2>/dev/null || return 1
  command -v ps >/dev/null 2>&1 || return 0
  ps -eo pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}
"#;

/// `stop_unit GRACE_MS FOLDER`: SIGTERM to the process group in `FOLDER/pid` (a unit's
/// supervisor), SIGKILL after `GRACE_MS`; prints `not-running`, `terminated` or `killed`.
const STOP_UNIT: &str = r#"stop_unit() {
  # Its variables start with `_`: a caller's `S`, `G` and the like stay as they were.
  _g=$1; _s=$2
  [ -f "$_s/pid" ] || { echo not-running; return 0; }
  _p=$(cat "$_s/pid")
  touch "$_s/stopping"
  if ! alive "$_p"; then rm -f "$_s/pid"; echo not-running; return 0; fi
  kill -TERM -"$_p" 2>/dev/null || true
  _w=0
  while alive "$_p"; do
    if [ "$_w" -ge "$_g" ]; then
      kill -KILL -"$_p" 2>/dev/null || true
      rm -f "$_s/pid"; echo stopped > "$_s/state"; echo killed; return 0
    fi
    sleep 0.01; _w=$((_w + 10))
  done
  rm -f "$_s/pid"; echo stopped > "$_s/state"; echo terminated
}"#;

/// Points `current` at release `$N` (checked to exist first): a new symlink renamed over it,
/// then flushed.
const SWITCH_CURRENT: &str = r#"ln -sfn "releases/$N" "$R/.current.tmp"
mv -T "$R/.current.tmp" "$R/current"
fsync "$R""#;

/// The switch of a blue-green SSH target's router, the front of [`SshHost::route`]'s script:
/// writes the wanted slot to `router/backend` with a token, signals the router (or starts it
/// under the supervisor `$L`, replacing one that runs another executable or address) and
/// waits until `router/routed` holds the same line.
const ROUTE: &str = r#"P=$1; SPEC=$2; N=$3; L=$4; shift 4
[ -z "$N" ] || [ -d "$R/releases/$N" ] || exit 3
S="$R/router"
[ -d "$S" ] || mkdir -p "$S"
# Builtins only where it can (this runs on every switch): `first FILE` reads a file's first
# line into `line`.
first() { { IFS= read -r line < "$1"; } 2>/dev/null || line=; }
# The token: this shell's pid (a stale `routed` holding the same one already routes there).
T="$P $$"
printf '%s\n' "$T" > "$S/backend.tmp" && mv "$S/backend.tmp" "$S/backend"
# The router is the process in router.pid when that runs `__route` (a pid left by one that
# crashed may be another process's).
first "$S/router.pid"; rp=$line
is_router() {
  [ -n "$rp" ] || return 1
  if [ -d /proc/self ]; then
    grep -q -a __route "/proc/$rp/cmdline" 2>/dev/null
  else
    case "$(ps -o args= -p "$rp" 2>/dev/null)" in *__route*) return 0 ;; *) return 1 ;; esac
  fi
}
up=
if is_router; then
  up=1
else
  # Between two runs of the router its supervisor still runs: the next run reads the file.
  first "$S/pid"; [ -n "$line" ] && alive "$line" && up=1
  rp=
fi
first "$S/spec"
if [ -n "$up" ] && [ "$line" != "$SPEC" ]; then
  # Another executable or address: the old router goes first.
  first "$S/pid"; g=$line; touch "$S/stopping"; kill -TERM -"$g" 2>/dev/null || true
  w=0; while alive "$g" && [ "$w" -lt 100 ]; do sleep 0.02; w=$((w + 1)); done
  kill -KILL -"$g" 2>/dev/null || true; up=; rp=
fi
if [ -z "$up" ]; then
  # A plain service (the target ran without slots before) holds the port the router takes.
  stop_unit 10000 "$R/service" > /dev/null
  rm -f "$S/stopping" "$S/state" "$S/router.pid"
  printf '%s\n' "$SPEC" > "$S/spec"
  setsid sh -c "$L" sorat-service "$R" "$@" < /dev/null >> "$S/log" 2>&1 &
  echo $! > "$S/pid"
elif [ -n "$rp" ]; then
  kill -HUP "$rp" 2>/dev/null || true
fi
w=0
while first "$S/routed"; [ "$line" != "$T" ]; do
  if [ "$w" -ge 5000 ]; then
    echo "the router did not confirm the switch within 10s; its log ends:" >&2
    tail -n 5 "$S/log" >&2
    exit 7
  fi
  # A router started meanwhile (its pid written once it handles SIGHUP) gets the signal too;
  # one that starts reads the file anyway.
  if [ "$w" -eq 250 ]; then
    first "$S/router.pid"; rp=$line
    if is_router; then kill -HUP "$rp" 2>/dev/null || true; fi
  fi
  sleep 0.002; w=$((w + 1))
done"#;

/// The detached job that puts releases' uploaded files into the cache, started by the prune
/// after a deploy: for each list a prepare left (`.cache-list.<n>`, taken by renaming it so
/// that two jobs never share one), each file is copied to a temporary file, hashed again and
/// fsynced, then renamed to `blobs/sha256/<hex>`; a copy whose digest differs (the service
/// changed its file already) or whose release is gone is dropped.
const CACHE_JOB: &str = r#"B="$R/blobs/sha256"
for L in "$B"/.cache-list.*; do
  [ -f "$L" ] || continue
  N=${L##*.}
  W="$B/.cache-work.$$.$N"
  mv "$L" "$W" 2>/dev/null || continue
  while IFS=' ' read -r H F; do
    [ -f "$B/$H" ] && continue
    t="$B/.cache.$$"
    if cp --reflink=auto "$R/releases/$N/$F" "$t" 2>/dev/null && [ "$(hash "$t")" = "$H" ]; then
      fsync "$t"; mv "$t" "$B/$H"
    else
      rm -f "$t"
    fi
  done < "$W"
  rm -f "$W"
done
"#;

/// The supervisor loop, run detached on the host. Arguments after the root: its unit's
/// folder and the working folder (both under the root), release, port, command,
/// initial/max backoff in ms, reset-after in s, max rapid failures. The service's
/// environment is the unit's `env` file (`export K='V'` lines, mode 0600), sourced before
/// each start: values are never on a command line, where any user of the host could read
/// them.
const SUPERVISOR: &str = r#"R=$1; U=$2; W=$3; N=$4; P=$5; C=$6; D0=$7; DMAX=$8; RESET=$9; MAX=${10}; shift 10
S="$R/$U"
state() { printf '%s\n' "$*" > "$S/state.tmp" && mv "$S/state.tmp" "$S/state"; }
failures=0; delay=$D0
while :; do
  state starting $((failures + 1))
  started=$(date +%s)
  (cd "$R/$W" && { [ ! -f "$S/env" ] || . "$S/env"; } && exec env PORT="$P" SORAT_RELEASE="$N" sh -c "$C" 2>> "$S/err") &
  child=$!
  state running $child
  set +e; wait $child; code=$?; set -e
  [ -e "$S/stopping" ] && { state stopped; exit 0; }
  state exited $code
  if [ $(( $(date +%s) - started )) -ge "$RESET" ]; then failures=0; delay=$D0; fi
  failures=$((failures + 1))
  if [ "$failures" -ge "$MAX" ]; then
    state failed "exited with code $code $failures times in a row within ${RESET}s of starting"
    exit 1
  fi
  state backoff $delay
  sleep "$((delay / 1000)).$(printf '%03d' $((delay % 1000)))"
  delay=$((delay * 2)); [ "$delay" -gt "$DMAX" ] && delay=$DMAX
done
"#;

fn remote_error(host: &str, action: &'static str, message: impl Into<String>) -> ReleaseError {
    ReleaseError::Remote {
        host: host.to_owned(),
        action,
        message: message.into(),
    }
}

/// The text of an `openssh` error with its causes, and what the master connection logged.
fn ssh_error_text(error: &openssh::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !cause_text.is_empty() && !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(cause_text.trim());
        }
        source = cause.source();
    }
    text
}

impl SshHost {
    /// A host to reach as `target` says (nothing is connected yet).
    pub fn new(target: SshTarget) -> SshHost {
        SshHost {
            target,
            log_limit: LOG_LIMIT,
            session: Mutex::new(None),
            router_uploaded: Mutex::new(None),
            router_binary: None,
        }
    }

    /// Moves the service's log to `log.1` past `bytes` (default 16 MiB) instead.
    pub fn with_log_limit(mut self, bytes: u64) -> SshHost {
        self.log_limit = bytes.max(1);
        self
    }

    /// Runs blue-green slots behind `binary`, Sorat's own executable, uploaded to the host
    /// and started there as its router (`sorat __route`); the host must be able to run it
    /// (the same OS and architecture).
    pub fn with_router(mut self, binary: PathBuf) -> SshHost {
        self.router_binary = Some(binary);
        self
    }

    /// The executable a blue-green router runs on the host, when one was given.
    pub fn router_binary(&self) -> Option<&Path> {
        self.router_binary.as_deref()
    }

    /// The host's name.
    pub fn name(&self) -> &str {
        &self.target.name
    }

    /// How it is reached.
    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// The folder of the `current` release on the host, for command probes.
    pub fn current_path(&self) -> String {
        format!("{}/current", self.target.dir.trim_end_matches('/'))
    }

    /// The folder of release `number` on the host.
    pub fn release_path(&self, number: u32) -> String {
        format!(
            "{}/releases/{number}",
            self.target.dir.trim_end_matches('/')
        )
    }

    async fn session(&self) -> Result<Arc<Session>, ReleaseError> {
        let mut slot = self.session.lock().await;
        if let Some((session, last_used)) = slot.as_mut() {
            // The master exits after CONTROL_PERSIST idle: one unused for a while is checked
            // (a round trip) and replaced when it is gone, so no command fails on it.
            if last_used.elapsed() < IDLE_CHECK || session.check().await.is_ok() {
                *last_used = std::time::Instant::now();
                return Ok(Arc::clone(session));
            }
            slot.take();
        }
        let target = &self.target;
        let mut builder = SessionBuilder::default();
        builder
            .known_hosts_check(KnownHosts::Strict)
            .port(target.port)
            .connect_timeout(target.connect_timeout)
            .server_alive_interval(Duration::from_secs(15))
            .control_persist(ControlPersist::IdleFor(CONTROL_PERSIST))
            .control_directory(&target.control_dir);
        if let Some(user) = &target.user {
            builder.user(user.clone());
        }
        if let Some(key) = &target.key {
            builder.keyfile(key);
        }
        if let Some(known_hosts) = &target.known_hosts {
            builder.user_known_hosts_file(known_hosts);
        }
        let session = builder.connect(&target.address).await.map_err(|error| {
            let text = ssh_error_text(&error);
            let hint = if text.contains("Host key verification failed")
                || text.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
                || text.contains("No ED25519 host key is known")
                || text.contains("host key is known")
            {
                format!(
                    "; the host's key is not the one in {} (check it, then update that file)",
                    target.known_hosts.as_deref().map_or_else(
                        || "~/.ssh/known_hosts".to_owned(),
                        |path| path.display().to_string()
                    )
                )
            } else {
                String::new()
            };
            remote_error(
                &target.name,
                "cannot connect",
                format!(
                    "{}@{}:{}: {text}{hint}",
                    target.user.as_deref().unwrap_or("(default user)"),
                    target.address,
                    target.port
                ),
            )
        })?;
        let session = Arc::new(session);
        *slot = Some((Arc::clone(&session), std::time::Instant::now()));
        Ok(session)
    }

    /// Forgets the connection (it is reopened on the next command).
    async fn drop_session(&self) {
        self.session.lock().await.take();
    }

    /// Closes the connection (its master process ends); the next command opens a new one.
    pub async fn close(&self) {
        let taken = self.session.lock().await.take();
        if let Some((session, _)) = taken
            && let Ok(session) = Arc::try_unwrap(session)
            && let Err(error) = session.close().await
        {
            tracing::debug!(host = %self.name(), %error, "closing the SSH connection");
        }
    }

    /// Runs `script` with `sh -c` on the host; its arguments are the root and `args`.
    /// `input` is copied to its stdin when given.
    async fn run(
        &self,
        action: &'static str,
        script: &str,
        args: &[&str],
        input: Option<Input<'_>>,
    ) -> Result<Ran, ReleaseError> {
        let session = self.session().await?;
        let text = format!("{PRELUDE}{script}");
        let mut command = session.command("sh");
        // A file goes to ssh as its stdin as it is: OpenSSH reads it, nothing is copied
        // through this process (twice as fast as a pipe fed 8 KiB at a time).
        let stdin = match &input {
            None => Stdio::null(),
            Some(Input::Bytes(_)) => Stdio::piped(),
            Some(Input::File(path)) => match std::fs::File::open(path) {
                Ok(file) => Stdio::from(std::os::fd::OwnedFd::from(file)),
                Err(error) => {
                    return Err(remote_error(
                        self.name(),
                        action,
                        format!("cannot open {}: {error}", path.display()),
                    ));
                }
            },
        };
        command
            .arg("-c")
            .arg(&text)
            .arg("sorat")
            .arg(&self.target.dir)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(stdin);
        let mut child = match command.spawn().await {
            Ok(child) => child,
            Err(error) => {
                self.drop_session().await;
                return Err(remote_error(self.name(), action, ssh_error_text(&error)));
            }
        };
        let mut stdout = child.stdout().take();
        let mut stderr = child.stderr().take();
        let read_out = async {
            let mut buffer = Vec::new();
            if let Some(stdout) = stdout.as_mut() {
                let _ = stdout.read_to_end(&mut buffer).await;
            }
            buffer
        };
        let read_err = async {
            let mut buffer = Vec::new();
            if let Some(stderr) = stderr.as_mut() {
                let _ = stderr.read_to_end(&mut buffer).await;
            }
            buffer
        };
        let mut stdin = child.stdin().take();
        let write_in = async {
            let Some(input) = input else {
                return Ok(());
            };
            let Some(mut pipe) = stdin.take() else {
                return Ok(());
            };
            let result = match input {
                Input::Bytes(bytes) => pipe.write_all(bytes).await,
                Input::File(_) => Ok(()),
            };
            let _ = pipe.shutdown().await;
            drop(pipe);
            // A remote script that failed early closes its stdin; its stderr says why.
            result.map_err(|error| format!("writing to the host: {error}"))
        };
        let (written, stdout_bytes, stderr_bytes) = tokio::join!(write_in, read_out, read_err);
        let status = child.wait().await;
        let stderr = String::from_utf8_lossy(&stderr_bytes).trim().to_owned();
        let code = match status {
            Ok(status) => status.code(),
            Err(openssh::Error::RemoteProcessTerminated) => None,
            Err(error) => {
                self.drop_session().await;
                return Err(remote_error(self.name(), action, ssh_error_text(&error)));
            }
        };
        if let Err(message) = written
            && code == Some(0)
        {
            return Err(remote_error(self.name(), action, message));
        }
        Ok(Ran {
            stdout: String::from_utf8_lossy(&stdout_bytes).into_owned(),
            stdout_bytes,
            stderr,
            code,
        })
    }

    /// Runs `script` and requires exit code 0; returns stdout.
    async fn run_ok(
        &self,
        action: &'static str,
        script: &str,
        args: &[&str],
        input: Option<Input<'_>>,
    ) -> Result<String, ReleaseError> {
        let ran = self.run(action, script, args, input).await?;
        if ran.code == Some(0) {
            return Ok(ran.stdout);
        }
        if ran.code == Some(255) {
            // ssh's own failure (the connection went away): reconnect next time.
            self.drop_session().await;
        }
        let message = if ran.stderr.is_empty() {
            match ran.code {
                Some(code) => format!("exited with code {code}"),
                None => "the remote command was killed or the connection was lost".to_owned(),
            }
        } else {
            ran.stderr
        };
        Err(remote_error(self.name(), action, message))
    }

    /// Checks that the host answers and its folder can be created.
    pub async fn check(&self) -> Result<(), ReleaseError> {
        self.run_ok(
            "cannot use the host's folder",
            "mkdir -p \"$R/releases\"",
            &[],
            None,
        )
        .await
        .map(drop)
    }

    /// The release `current` points at, if any.
    pub async fn current(&self) -> Result<Option<u32>, ReleaseError> {
        let out = self
            .run_ok(
                "cannot read current",
                "if [ -L \"$R/current\" ]; then readlink \"$R/current\"; fi",
                &[],
                None,
            )
            .await?;
        let link = out.trim();
        if link.is_empty() {
            return Ok(None);
        }
        link.rsplit('/')
            .next()
            .and_then(|name| name.parse::<u32>().ok())
            .map(Some)
            .ok_or_else(|| {
                remote_error(
                    self.name(),
                    "cannot read current",
                    format!("it points at {link}, which is not a release"),
                )
            })
    }

    /// The complete releases, in increasing order.
    pub async fn releases(&self) -> Result<Vec<u32>, ReleaseError> {
        Ok(self.state().await?.releases)
    }

    /// The current release and the complete releases, in one round trip.
    pub async fn current_and_releases(&self) -> Result<(Option<u32>, Vec<u32>), ReleaseError> {
        let state = self.state().await?;
        Ok((state.current, state.releases))
    }

    /// Current, releases and the recorded last number, in one round trip.
    async fn state(&self) -> Result<HostState, ReleaseError> {
        let out = self
            .run_ok(
                "cannot list releases",
                r#"if [ -L "$R/current" ]; then echo "current $(readlink "$R/current")"; fi
if [ -f "$R/releases/.last" ]; then echo "last $(cat "$R/releases/.last")"; fi
if [ -d "$R/releases" ]; then
  for d in "$R"/releases/*; do
    n=${d##*/}
    case "$n" in *[!0-9]*|'') ;; *) [ -d "$d" ] && echo "release $n" ;; esac
  done
fi
true"#,
                &[],
                None,
            )
            .await?;
        let mut state = HostState::default();
        for line in out.lines() {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "current" => {
                    state.current = value.rsplit('/').next().and_then(|n| n.parse().ok());
                }
                "last" => state.last = value.trim().parse().unwrap_or(0),
                "release" => {
                    if let Ok(number) = value.parse() {
                        state.releases.push(number);
                    }
                }
                _ => {}
            }
        }
        state.releases.sort_unstable();
        Ok(state)
    }

    /// The highest release number ever completed on the host (0 when none).
    pub async fn last_number(&self) -> Result<u32, ReleaseError> {
        let state = self.state().await?;
        Ok(state.last.max(state.releases.last().copied().unwrap_or(0)))
    }

    /// Builds `releases/<number>.partial/`: each file from the host's cache when it has the
    /// blob (verified again), else uploaded straight into the folder (and listed for the
    /// cache job); writes `release.json` and renames the folder to `releases/<number>/`.
    pub async fn prepare(
        &self,
        number: u32,
        meta: &ReleaseMeta,
        files: &[ReleaseFile],
    ) -> Result<ReleaseRecord, ReleaseError> {
        let used = |reason: String| ReleaseError::NumberUsed {
            host: self.name().to_owned(),
            number,
            reason,
        };
        if number == 0 {
            return Err(used("release numbers start at 1".to_owned()));
        }
        let mut recorded = Vec::with_capacity(files.len());
        let mut manifest = String::new();
        for file in files {
            let path_text = file.path.to_str().unwrap_or("");
            if !is_plain_relative(&file.path) || path_text.contains(['\n', '\r']) {
                return Err(ReleaseError::InvalidPath(file.path.clone()));
            }
            let digest = parse_digest(&file.digest)?;
            manifest.push_str(&format!(
                "{} {:o} {path_text}\n",
                &digest["sha256:".len()..],
                file.mode & 0o7777
            ));
            recorded.push(RecordedFile {
                path: file.path.clone(),
                digest,
                mode: file.mode,
            });
        }
        // Each distinct blob once: one round trip says which the host has (verified again
        // there) and starts the release's partial folder; the missing ones are streamed into
        // it.
        let number_text = number.to_string();
        let mut hexes: Vec<&str> = Vec::new();
        for recorded_file in &recorded {
            let hex = &recorded_file.digest["sha256:".len()..];
            if !hexes.contains(&hex) {
                hexes.push(hex);
            }
        }
        let mut args: Vec<&str> = vec![&number_text];
        args.extend(hexes.iter().copied());
        // The same round trip checks that the number is unused: above `.last` and every
        // release folder.
        let present = self
            .run_ok(
                "cannot verify blobs",
                r#"N=$1; shift
l=0
if [ -f "$R/releases/.last" ]; then
  l=$(cat "$R/releases/.last")
  case "$l" in ''|*[!0-9]*) l=0 ;; esac
fi
if [ -d "$R/releases" ]; then
  for d in "$R"/releases/*; do
    n=${d##*/}
    case "$n" in ''|*[!0-9]*) continue ;; esac
    if [ -d "$d" ] && [ "$n" -gt "$l" ]; then l=$n; fi
  done
fi
if [ "$N" -le "$l" ]; then echo "used $l"; exit 0; fi
P="$R/releases/$N.partial"
rm -rf "$P"; mkdir -p "$P"
for H in "$@"; do
  f="$R/blobs/sha256/$H"
  [ -f "$f" ] || continue
  if [ "$(hash "$f")" = "$H" ]; then echo "$H"; else rm -f "$f"; fi
done"#,
                &args,
                None,
            )
            .await?;
        if let Some(last) = present.strip_prefix("used ") {
            return Err(used(format!(
                "numbers are never reused and {} was already used here",
                last.trim()
            )));
        }
        let present: Vec<&str> = present.lines().map(str::trim).collect();
        // Manifest lines: hex, mode, where the file comes from (`b` the cache, `u` uploaded
        // to this path, `d` the same content as a file uploaded to another path), path.
        let mut manifest = String::new();
        let mut uploaded: Vec<&str> = Vec::new();
        for (file, recorded_file) in files.iter().zip(&recorded) {
            let hex = &recorded_file.digest["sha256:".len()..];
            let path_text = file.path.to_str().unwrap_or("");
            let kind = if present.contains(&hex) {
                'b'
            } else if uploaded.contains(&hex) {
                'd'
            } else {
                if let Err(error) = self.put_file(number, hex, path_text, &file.source).await {
                    // The upload removes the partial release when it fails on the host; a
                    // failure here (the local file) leaves it to be removed.
                    let _ = self
                        .run(
                            "cannot remove a partial release",
                            r#"rm -rf "$R/releases/$1.partial""#,
                            &[&number_text],
                            None,
                        )
                        .await;
                    return Err(error);
                }
                uploaded.push(hex);
                'u'
            };
            manifest.push_str(&format!(
                "{hex} {:o} {kind} {path_text}\n",
                file.mode & 0o7777
            ));
        }
        let record = ReleaseRecord {
            number,
            artifact: meta.artifact.clone(),
            digest: parse_digest(&meta.digest)?,
            created: jiff::Timestamp::now(),
            who: meta.who.clone(),
            status: ReleaseStatus::Prepared,
            files: recorded,
            config: meta.config.clone(),
        };
        let json = serde_json::to_string_pretty(&record).map_err(|error| ReleaseError::Record {
            path: PathBuf::from(RELEASE_JSON),
            message: error.to_string(),
        })?;
        self.run_ok(
            "cannot prepare the release",
            r#"N=$1; J=$2
B="$R/blobs/sha256"; P="$R/releases/$N.partial"
trap 'rm -rf "$P"' EXIT
mkdir -p "$P" "$B"
L="$B/.cache-list.$N"
: > "$L"
# Every file is flushed at once at the end: one journal commit rather than one per file.
set --
while IFS=' ' read -r hex mode kind path; do
  case "$path" in */*) mkdir -p "$P/${path%/*}" ;; esac
  case "$kind" in
    u) eval "U_$hex=\$path"; printf '%s %s\n' "$hex" "$path" >> "$L" ;;
    d) eval "src=\$U_$hex"; cp "$P/$src" "$P/$path" ;;
    *) cp --reflink=auto "$B/$hex" "$P/$path" ;;
  esac
  chmod "$mode" "$P/$path"
  set -- "$@" "$P/$path"
done
printf '%s\n' "$J" > "$P/release.json"
fsync "$@" "$P/release.json" "$P"
mv "$P" "$R/releases/$N"
trap - EXIT
printf '%s' "$N" > "$R/releases/.last.tmp"
fsync "$R/releases/.last.tmp"
mv "$R/releases/.last.tmp" "$R/releases/.last"
fsync "$R/releases"
[ -s "$L" ] || rm -f "$L""#,
            &[&number_text, &json],
            Some(Input::Bytes(manifest.as_bytes())),
        )
        .await?;
        tracing::debug!(host = %self.name(), release = number, "release prepared over ssh");
        Ok(record)
    }

    /// Streams `source` into release `number`'s partial folder at `path`, fsyncs it and
    /// hashes it; a digest that differs removes the partial release.
    async fn put_file(
        &self,
        number: u32,
        hex: &str,
        path: &str,
        source: &Path,
    ) -> Result<(), ReleaseError> {
        let number_text = number.to_string();
        let ran = self
            .run(
                "cannot upload",
                r#"N=$1; H=$2; F=$3
P="$R/releases/$N.partial"
trap 'rm -rf "$P"' EXIT
case "$F" in */*) mkdir -p "$P/${F%/*}" ;; esac
t="$P/$F"
cat > "$t" || { echo "cannot write $t (is the disk full?)" >&2; exit 5; }
# Flushed first, then hashed: both at once is slower (the reads compete with the writeback).
fsync "$t"
sum=$(hash "$t")
if [ "$sum" != "$H" ]; then echo "digest mismatch: expected sha256:$H, got sha256:$sum" >&2; exit 6; fi
trap - EXIT"#,
                &[&number_text, hex, path],
                Some(Input::File(source)),
            )
            .await?;
        if ran.code == Some(0) {
            return Ok(());
        }
        if ran.code == Some(6) {
            let actual = ran
                .stderr
                .rsplit("got ")
                .next()
                .unwrap_or_default()
                .to_owned();
            return Err(ReleaseError::DigestMismatch {
                path: source.to_path_buf(),
                expected: format!("sha256:{hex}"),
                actual,
            });
        }
        Err(remote_error(self.name(), "cannot upload", ran.failure()))
    }

    /// Points `current` at release `number` (a new symlink renamed over it).
    pub async fn switch(&self, number: u32) -> Result<(), ReleaseError> {
        let number_text = number.to_string();
        let ran = self
            .run(
                "cannot switch current",
                &format!("N=$1\n[ -d \"$R/releases/$N\" ] || exit 3\n{SWITCH_CURRENT}"),
                &[&number_text],
                None,
            )
            .await?;
        match ran.code {
            Some(0) => Ok(()),
            Some(3) => Err(ReleaseError::NotFound {
                host: self.name().to_owned(),
                number,
            }),
            _ => Err(remote_error(
                self.name(),
                "cannot switch current",
                ran.stderr,
            )),
        }
    }

    /// Removes `current`.
    pub async fn clear_current(&self) -> Result<(), ReleaseError> {
        self.run_ok("cannot remove current", "rm -f \"$R/current\"", &[], None)
            .await
            .map(drop)
    }

    /// Reads `release.json` of release `number`.
    pub async fn record(&self, number: u32) -> Result<ReleaseRecord, ReleaseError> {
        let number_text = number.to_string();
        let ran = self
            .run(
                "cannot read release.json",
                "f=\"$R/releases/$1/release.json\"; [ -f \"$f\" ] || exit 3; cat \"$f\"",
                &[&number_text],
                None,
            )
            .await?;
        match ran.code {
            Some(0) => serde_json::from_str(&ran.stdout).map_err(|error| ReleaseError::Record {
                path: PathBuf::from(format!(
                    "{}:{}/releases/{number}/release.json",
                    self.name(),
                    self.target.dir
                )),
                message: error.to_string(),
            }),
            Some(3) => Err(ReleaseError::NotFound {
                host: self.name().to_owned(),
                number,
            }),
            _ => Err(remote_error(
                self.name(),
                "cannot read release.json",
                ran.stderr,
            )),
        }
    }

    /// Sets the status in `release.json` of release `number`.
    pub async fn set_status(&self, number: u32, status: ReleaseStatus) -> Result<(), ReleaseError> {
        // One round trip: the status line of the file Sorat wrote is replaced in place on
        // the host; a file in another shape is read, changed and written back from here.
        let word = serde_json::to_value(status)
            .ok()
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_default();
        let number_text = number.to_string();
        let ran = self
            .run(
                "cannot write release.json",
                r#"f="$R/releases/$1/release.json"
[ -f "$f" ] || { echo "release $1 has no release.json" >&2; exit 3; }
sed 's/^\(  "status": \)"[a-z_]*"/\1"'"$2"'"/' "$f" > "$f.tmp"
if grep -q "^  \"status\": \"$2\"" "$f.tmp"; then mv "$f.tmp" "$f"; else rm -f "$f.tmp"; exit 4; fi"#,
                &[&number_text, &word],
                None,
            )
            .await?;
        match ran.code {
            Some(0) => return Ok(()),
            Some(4) => {}
            _ => {
                return Err(remote_error(
                    self.name(),
                    "cannot write release.json",
                    ran.failure(),
                ));
            }
        }
        let mut record = self.record(number).await?;
        record.status = status;
        let json = serde_json::to_string_pretty(&record).map_err(|error| ReleaseError::Record {
            path: PathBuf::from(RELEASE_JSON),
            message: error.to_string(),
        })?;
        self.run_ok(
            "cannot write release.json",
            r#"f="$R/releases/$1/release.json"
printf '%s\n' "$2" > "$f.tmp"
mv "$f.tmp" "$f""#,
            &[&number_text, &json],
            None,
        )
        .await
        .map(drop)
    }

    /// Keeps the last `keep` releases and removes older ones (refusing, before removing
    /// anything, the current one and those in `protect`), then removes blobs no kept release
    /// uses. Returns the removed numbers.
    pub async fn prune(&self, keep: usize, protect: &[u32]) -> Result<Vec<u32>, ReleaseError> {
        let state = self.state().await?;
        let doomed: Vec<u32> = state
            .releases
            .iter()
            .rev()
            .skip(keep)
            .rev()
            .copied()
            .collect();
        for number in &doomed {
            let why = if state.current == Some(*number) {
                Some("the current release")
            } else if protect.contains(number) {
                Some("protected (a rollback needs it)")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(ReleaseError::Refused {
                    host: self.name().to_owned(),
                    number: *number,
                    why,
                });
            }
        }
        let doomed_text: Vec<String> = doomed.iter().map(u32::to_string).collect();
        let cache_job = format!("{PRELUDE}{CACHE_JOB}");
        let mut args: Vec<&str> = vec![&cache_job];
        args.extend(doomed_text.iter().map(String::as_str));
        self.run_ok(
            "cannot prune releases",
            r#"C=$1; shift
# Files uploaded by earlier deploys go into the cache now, after the deploy, detached
# from this session, at the lowest CPU and disk priority the host offers.
for L in "$R"/blobs/sha256/.cache-list.*; do
  [ -f "$L" ] || continue
  d=
  if command -v setsid >/dev/null 2>&1; then d="setsid"; fi
  if command -v nice >/dev/null 2>&1; then d="$d nice -n 19"; fi
  if command -v ionice >/dev/null 2>&1; then d="$d ionice -c 3"; fi
  $d sh -c "$C" sorat-cache "$R" < /dev/null > /dev/null 2>&1 &
  break
done
for n in "$@"; do
  mv "$R/releases/$n" "$R/releases/.removing-$n-$$"
  rm -rf "$R/releases/.removing-$n-$$"
done
# The blobs the kept releases use: every `sha256:<64 hex>` in their release.json files.
K=" $(cat "$R"/releases/[0-9]*/release.json 2>/dev/null | tr -cs '0-9a-z:' '\n' \
  | sed -n 's/^sha256:\([0-9a-f]\{64\}\)$/\1/p' | tr '\n' ' ') "
if [ -d "$R/blobs/sha256" ]; then
  for f in "$R"/blobs/sha256/*; do
    [ -f "$f" ] || continue
    case "$K" in *" ${f##*/} "*) ;; *) rm -f "$f" ;; esac
  done
fi"#,
            &args,
            None,
        )
        .await?;
        Ok(doomed)
    }

    /// Starts the service of release `number` under the remote supervisor (stopping one
    /// that runs first); returns a receiver of its states, read from the host every
    /// `poll` while someone listens. With `switch`, `current` is pointed at `number` first,
    /// in the same round trip (a rollback's switch and restart).
    pub async fn start_service(
        self: &Arc<Self>,
        number: u32,
        service: &ServiceConfig,
        port: u16,
        lines: Option<mpsc::Sender<ServiceLine>>,
        switch: bool,
    ) -> Result<RemoteService, ReleaseError> {
        let workdir = within("current".to_owned(), service);
        self.start_unit(
            SERVICE_UNIT,
            &workdir,
            number,
            service,
            port,
            &[],
            lines,
            switch,
        )
        .await
    }

    /// Starts release `number` in blue-green slot `slot` (0 blue, 1 green) on `port`, run
    /// from its release folder with `SORAT_SLOT` set, stopping what ran there first.
    pub(crate) async fn start_slot(
        self: &Arc<Self>,
        slot: usize,
        number: u32,
        service: &ServiceConfig,
        port: u16,
        lines: Option<mpsc::Sender<ServiceLine>>,
    ) -> Result<RemoteService, ReleaseError> {
        let slot_env = format!("SORAT_SLOT={}", crate::deploy::SLOT_NAMES[slot]);
        let workdir = within(format!("releases/{number}"), service);
        self.start_unit(
            SLOT_UNITS[slot],
            &workdir,
            number,
            service,
            port,
            &[&slot_env],
            lines,
            false,
        )
        .await
    }

    /// Starts `command` of `service` under the remote supervisor in the folder `unit`
    /// (under the root), run from `workdir` with `PORT` = `port`; first points `current` at
    /// release `number` when `switch` says so.
    #[allow(clippy::too_many_arguments)]
    async fn start_unit(
        self: &Arc<Self>,
        unit: &'static str,
        workdir: &str,
        number: u32,
        service: &ServiceConfig,
        port: u16,
        extra_env: &[&str],
        lines: Option<mpsc::Sender<ServiceLine>>,
        switch: bool,
    ) -> Result<RemoteService, ReleaseError> {
        let ServiceConfig {
            command,
            env,
            restart,
            stop_grace,
            ..
        } = service;
        let grace_ms = stop_grace.as_millis().to_string();
        let number_text = number.to_string();
        let port_text = port.to_string();
        let initial = restart.initial_backoff.as_millis().max(1).to_string();
        let max = restart.max_backoff.as_millis().max(1).to_string();
        let reset = restart.reset_after.as_secs().max(1).to_string();
        let failures = restart.max_rapid_failures.max(1).to_string();
        // The environment travels as the command's input into a file only the user can read.
        let mut env_file = String::new();
        let extra: Vec<(&str, &str)> = extra_env
            .iter()
            .filter_map(|pair| pair.split_once('='))
            .collect();
        for (key, value) in env
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .chain(extra)
        {
            let is_name = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !is_name {
                return Err(remote_error(
                    self.name(),
                    "cannot start the service",
                    format!("`{key}` is not a variable name the host's shell can export"),
                ));
            }
            env_file.push_str(&format!(
                "export {key}='{}'\n",
                value.replace('\'', "'\\''")
            ));
        }
        let args: Vec<&str> = vec![
            &grace_ms,
            if switch { "switch" } else { "" },
            SUPERVISOR,
            unit,
            workdir,
            &number_text,
            &port_text,
            command,
            &initial,
            &max,
            &reset,
            &failures,
        ];
        // What ran in this unit stops first, in the same round trip.
        let script = format!(
            r#"{STOP_UNIT}
G=$1; SW=$2; L=$3; shift 3
if [ -n "$SW" ]; then
  N=$3
  [ -d "$R/releases/$N" ] || exit 3
{SWITCH_CURRENT}
fi
stop_unit "$G" "$R/$1" > /dev/null
# A plain service gives the slots and the router up (the target ran blue-green before; they
# hold its port). Nothing to do, and no process listed, when they never ran.
if [ "$1" = service ]; then
  for u in router slots/blue slots/green; do stop_unit "$G" "$R/$u" > /dev/null; done
fi
S="$R/$1"
mkdir -p "$S"
(umask 077 && cat > "$S/env.tmp") && mv "$S/env.tmp" "$S/env"
rm -f "$S/stopping" "$S/state"
printf '%s\n' "$3" > "$S/release"
: >> "$S/log"; : >> "$S/err"
echo "$(wc -c < "$S/log") $(wc -c < "$S/err")"
setsid sh -c "$L" sorat-service "$R" "$@" < /dev/null >> "$S/log" 2>&1 &
echo $! > "$S/pid""#
        );
        let ran = self
            .run(
                "cannot start the service",
                &script,
                &args,
                Some(Input::Bytes(env_file.as_bytes())),
            )
            .await?;
        let started = match ran.code {
            Some(0) => ran.stdout,
            Some(3) if switch => {
                return Err(ReleaseError::NotFound {
                    host: self.name().to_owned(),
                    number,
                });
            }
            _ => {
                return Err(remote_error(
                    self.name(),
                    "cannot start the service",
                    ran.failure(),
                ));
            }
        };
        // What the new release writes starts here in its log and err.
        let mut sizes = started
            .split_whitespace()
            .map(|size| size.parse::<i64>().unwrap_or(-1));
        let log_start = [sizes.next().unwrap_or(-1), sizes.next().unwrap_or(-1)];
        Ok(self.watch_unit(
            unit,
            ServiceState::Starting { attempt: 1 },
            number,
            lines,
            log_start,
        ))
    }

    /// Watches `unit`'s states (and its `log` and `err` from the offsets `log_start`, -1 for
    /// their ends, when `lines` is given).
    fn watch_unit(
        self: &Arc<Self>,
        unit: &'static str,
        state: ServiceState,
        number: u32,
        lines: Option<mpsc::Sender<ServiceLine>>,
        log_start: [i64; 2],
    ) -> RemoteService {
        let (sender, receiver) = watch::channel(state);
        let poller = tokio::spawn(poll_state(Arc::clone(self), unit, sender));
        let tail = lines
            .map(|lines| tokio::spawn(tail_log(Arc::clone(self), unit, number, lines, log_start)));
        RemoteService {
            states: receiver,
            poller,
            tail,
        }
    }

    /// Watches the service that runs on the host, if one does (it outlived Sorat): returns
    /// `None` when none runs, so the caller starts one.
    pub async fn attach(
        self: &Arc<Self>,
        number: u32,
        lines: Option<mpsc::Sender<ServiceLine>>,
    ) -> Result<Option<RemoteService>, ReleaseError> {
        let out = self
            .run_ok(
                "cannot read the service's state",
                r#"S="$R/service"
[ -f "$S/pid" ] || exit 0
pid=$(cat "$S/pid")
if alive "$pid"; then echo alive; fi"#,
                &[],
                None,
            )
            .await?;
        if out.trim() != "alive" {
            return Ok(None);
        }
        let state = self.read_state(SERVICE_UNIT).await?;
        tracing::info!(host = %self.name(), release = number, "the service runs on the host: watching it");
        Ok(Some(self.watch_unit(
            SERVICE_UNIT,
            state,
            number,
            lines,
            [-1, -1],
        )))
    }

    /// Stops the service: SIGTERM to its process group, SIGKILL after `grace`.
    pub async fn stop_service(&self, grace: Duration) -> Result<StopOutcome, ReleaseError> {
        self.stop_unit(SERVICE_UNIT, grace).await
    }

    /// Stops what a blue-green slot runs, as [`SshHost::stop_service`].
    pub(crate) async fn stop_slot(
        &self,
        slot: usize,
        grace: Duration,
    ) -> Result<StopOutcome, ReleaseError> {
        self.stop_unit(SLOT_UNITS[slot], grace).await
    }

    /// Stops the supervised process group of `unit`: SIGTERM, SIGKILL after `grace`.
    async fn stop_unit(&self, unit: &str, grace: Duration) -> Result<StopOutcome, ReleaseError> {
        let grace_ms = grace.as_millis().to_string();
        let out = self
            .run_ok(
                "cannot stop the service",
                &format!("{STOP_UNIT}\nstop_unit \"$1\" \"$R/$2\""),
                &[&grace_ms, unit],
                None,
            )
            .await?;
        Ok(match out.trim() {
            "killed" => StopOutcome::Killed,
            "terminated" => StopOutcome::Terminated,
            _ => StopOutcome::NotRunning,
        })
    }

    /// What runs in a blue-green target's units on the host, in one round trip: for the
    /// router and each slot, whether it is alive and its release; and the line the router
    /// last confirmed.
    pub(crate) async fn slot_status(&self) -> Result<RemoteSlots, ReleaseError> {
        let out = self
            .run_ok(
                "cannot read the slots' state",
                r#"for U in "$@"; do
  S="$R/$U"; a=dead
  if [ -f "$S/pid" ] && alive "$(cat "$S/pid")"; then a=alive; fi
  n=$(cat "$S/release" 2>/dev/null || echo 0)
  printf '%s %s\n' "$a" "${n:-0}"
done
cat "$R/router/routed" 2>/dev/null || echo"#,
                &[ROUTER_UNIT, SLOT_UNITS[0], SLOT_UNITS[1]],
                None,
            )
            .await?;
        let mut lines = out.lines();
        let mut unit = || {
            let line = lines.next().unwrap_or_default();
            let (alive, release) = line.split_once(' ').unwrap_or((line, "0"));
            (alive == "alive", release.trim().parse::<u32>().unwrap_or(0))
        };
        let (router_alive, _) = unit();
        let blue = unit();
        let green = unit();
        let routed_port = lines
            .next()
            .and_then(|line| line.split_whitespace().next())
            .and_then(|port| port.parse().ok());
        Ok(RemoteSlots {
            routed_port: routed_port.filter(|_| router_alive),
            slots: [blue, green].map(|(alive, release)| alive.then_some(release)),
        })
    }

    /// Watches a slot's service that runs on the host (it outlived Sorat).
    pub(crate) async fn attach_slot(
        self: &Arc<Self>,
        slot: usize,
        number: u32,
        lines: Option<mpsc::Sender<ServiceLine>>,
    ) -> Result<RemoteService, ReleaseError> {
        let state = self.read_state(SLOT_UNITS[slot]).await?;
        Ok(self.watch_unit(SLOT_UNITS[slot], state, number, lines, [-1, -1]))
    }

    /// Sends the host's new connections on `listen` to the slot on `port`: writes the
    /// router's backend file and signals the router (starting it under the supervisor when
    /// it does not run, after uploading `binary`, Sorat's own executable, when the host
    /// lacks it), then waits for the router to confirm; then, in the same round trip, points
    /// `current` at release `current` when one is given (checked to exist before anything).
    pub(crate) async fn route(
        &self,
        binary: &Path,
        listen: std::net::SocketAddr,
        port: u16,
        current: Option<u32>,
    ) -> Result<(), ReleaseError> {
        let executable = self.router_executable(binary).await?;
        let command = format!("exec ./{executable} __route --listen '{listen}' --dir .");
        let spec = format!("{executable} {listen}");
        let port_text = port.to_string();
        let current_text = current.map(|number| number.to_string()).unwrap_or_default();
        let script = format!("{STOP_UNIT}\n{ROUTE}\n[ -n \"$N\" ] || exit 0\n{SWITCH_CURRENT}");
        let restart = crate::service::RestartPolicy::default();
        let initial = restart.initial_backoff.as_millis().max(1).to_string();
        let max = restart.max_backoff.as_millis().max(1).to_string();
        let reset = restart.reset_after.as_secs().max(1).to_string();
        let failures = restart.max_rapid_failures.max(1).to_string();
        let args = [
            port_text.as_str(),
            spec.as_str(),
            current_text.as_str(),
            SUPERVISOR,
            ROUTER_UNIT,
            ROUTER_UNIT,
            "0",
            port_text.as_str(),
            command.as_str(),
            initial.as_str(),
            max.as_str(),
            reset.as_str(),
            failures.as_str(),
        ];
        let ran = self
            .run("cannot switch the router", &script, &args, None)
            .await?;
        match (ran.code, current) {
            (Some(0), _) => Ok(()),
            (Some(3), Some(number)) => Err(ReleaseError::NotFound {
                host: self.name().to_owned(),
                number,
            }),
            _ => Err(remote_error(
                self.name(),
                "cannot switch the router",
                ran.failure(),
            )),
        }
    }

    /// Stops the blue-green router on the host.
    pub(crate) async fn stop_router(&self, grace: Duration) -> Result<StopOutcome, ReleaseError> {
        self.stop_unit(ROUTER_UNIT, grace).await
    }

    /// Uploads the router's executable when the host lacks it (once per process and version),
    /// so that the switch later is quick; nothing when no router was given.
    pub(crate) async fn ensure_router(&self) -> Result<(), ReleaseError> {
        match &self.router_binary {
            Some(binary) => self.router_executable(binary).await.map(drop),
            None => Ok(()),
        }
    }

    /// The name of Sorat's executable in the router's folder on the host, uploaded there
    /// (checked by its digest) when it is missing.
    async fn router_executable(&self, binary: &Path) -> Result<String, ReleaseError> {
        let hex = executable_digest(binary).await?;
        let name = format!("sorat-{}", &hex[..16]);
        let mut known = self.router_uploaded.lock().await;
        if known.as_deref() == Some(name.as_str()) {
            return Ok(name);
        }
        let found = self
            .run_ok(
                "cannot upload the router",
                r#"uname -sm 2>/dev/null || echo; [ -x "$R/router/$1" ] && echo present || true"#,
                &[&name],
                None,
            )
            .await?;
        let mut lines = found.lines();
        let uname = lines.next().unwrap_or_default().trim();
        if let Some(platform) = executable_platform(binary).await
            && !platform.runs_on(uname)
        {
            return Err(remote_error(
                self.name(),
                "cannot run the blue-green router",
                format!(
                    "the host runs {uname}, but the router {} is built for {platform}: give the target `router:`, a Sorat built for {uname}",
                    binary.display()
                ),
            ));
        }
        if lines.next().map(str::trim) == Some("present") {
            *known = Some(name.clone());
            return Ok(name);
        }
        let ran = self
            .run(
                "cannot upload the router",
                r#"H=$1; F="$R/router/$2"
mkdir -p "$R/router"
t="$F.tmp.$$"
trap 'rm -f "$t"' EXIT
cat > "$t" || { echo "cannot write $t (is the disk full?)" >&2; exit 5; }
fsync "$t"
sum=$(hash "$t")
if [ "$sum" != "$H" ]; then echo "digest mismatch: expected sha256:$H, got sha256:$sum" >&2; exit 6; fi
chmod 755 "$t"; mv "$t" "$F"
trap - EXIT"#,
                &[&hex, &name],
                Some(Input::File(binary)),
            )
            .await?;
        if ran.code != Some(0) {
            return Err(remote_error(
                self.name(),
                "cannot upload the router",
                ran.failure(),
            ));
        }
        *known = Some(name.clone());
        Ok(name)
    }

    /// Runs a command probe in the folder `dir` on the host (the `current` folder, or a
    /// slot's release) with `PORT` set, cut after `limit`.
    pub async fn probe_command(
        &self,
        command: &str,
        dir: &str,
        port: u16,
        limit: Duration,
    ) -> Result<(), (String, bool)> {
        let port_text = port.to_string();
        let limit_text = format!("{:.3}", limit.as_secs_f64().max(0.001));
        let args = [port_text.as_str(), limit_text.as_str(), command, dir];
        let run = self.run(
            "cannot run the health command",
            r#"cd "$4" && PORT="$1" exec timeout -s KILL "$2" sh -c "$3""#,
            &args,
            None,
        );
        let timed_out = || (format!("`{command}` did not end within {limit:?}"), true);
        match tokio::time::timeout(limit + Duration::from_secs(2), run).await {
            Err(_) => Err(timed_out()),
            Ok(Err(error)) => Err((error.to_string(), false)),
            Ok(Ok(ran)) => match ran.code {
                Some(0) => Ok(()),
                Some(137) => Err(timed_out()),
                Some(code) => Err((format!("`{command}` ended with exit status: {code}"), false)),
                None => Err((format!("`{command}` was killed"), false)),
            },
        }
    }

    /// Reads the state file of `unit`'s supervisor.
    async fn read_state(&self, unit: &str) -> Result<ServiceState, ReleaseError> {
        let out = self
            .run_ok(
                "cannot read the service's state",
                "cat \"$R/$1/state\" 2>/dev/null || true",
                &[unit],
                None,
            )
            .await?;
        Ok(parse_state(out.trim()))
    }
}

/// What a file's content is given as.
enum Input<'a> {
    Bytes(&'a [u8]),
    File(&'a Path),
}

#[derive(Default)]
struct HostState {
    current: Option<u32>,
    last: u32,
    releases: Vec<u32>,
}

fn is_plain_relative(path: &Path) -> bool {
    let mut any = false;
    for component in path.components() {
        match component {
            std::path::Component::Normal(_) => any = true,
            std::path::Component::CurDir => {}
            _ => return false,
        }
    }
    any
}

fn parse_state(text: &str) -> ServiceState {
    let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
    match word {
        "starting" => ServiceState::Starting {
            attempt: rest.trim().parse().unwrap_or(1),
        },
        "running" => ServiceState::Running {
            pid: rest.trim().parse().unwrap_or(0),
        },
        "exited" => ServiceState::Exited {
            code: rest.trim().parse().unwrap_or(-1),
        },
        "backoff" => ServiceState::Backoff {
            delay: Duration::from_millis(rest.trim().parse().unwrap_or(0)),
        },
        "failed" => ServiceState::Failed {
            reason: rest.trim().to_owned(),
        },
        "stopped" => ServiceState::Stopped,
        _ => ServiceState::Starting { attempt: 1 },
    }
}

/// A service supervised on a host over SSH: its states, read from the host.
#[derive(Debug)]
pub struct RemoteService {
    states: watch::Receiver<ServiceState>,
    poller: tokio::task::JoinHandle<()>,
    tail: Option<tokio::task::JoinHandle<()>>,
}

impl RemoteService {
    /// A service whose states `poller` sends to `states`.
    pub(crate) fn from_parts(
        states: watch::Receiver<ServiceState>,
        poller: tokio::task::JoinHandle<()>,
    ) -> RemoteService {
        RemoteService {
            states,
            poller,
            tail: None,
        }
    }

    /// The last state read.
    pub fn state(&self) -> ServiceState {
        self.states.borrow().clone()
    }

    /// A receiver of its states.
    pub fn watch(&self) -> watch::Receiver<ServiceState> {
        self.states.clone()
    }
}

impl Drop for RemoteService {
    fn drop(&mut self) {
        self.poller.abort();
        if let Some(tail) = &self.tail {
            tail.abort();
        }
    }
}

/// Sends `state` to a remote service's watchers when it differs from the last one; true when
/// the service has ended (failed or stopped), so that its watch can end too.
pub(crate) fn publish_state(sender: &watch::Sender<ServiceState>, state: ServiceState) -> bool {
    let ended = matches!(state, ServiceState::Failed { .. } | ServiceState::Stopped);
    sender.send_if_modified(|old| {
        let changed = *old != state;
        *old = state;
        changed
    });
    ended
}

/// Reads the remote state quickly while the service starts, then every few seconds.
async fn poll_state(host: Arc<SshHost>, unit: &'static str, sender: watch::Sender<ServiceState>) {
    let started = tokio::time::Instant::now();
    loop {
        let pause = if started.elapsed() < Duration::from_secs(120) {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        tokio::time::sleep(pause).await;
        let state = host.read_state(unit).await.unwrap_or_else(|error| {
            // A host that cannot be reached: said so until it answers again.
            tracing::debug!(host = %host.name(), %error, "reading the service's state");
            ServiceState::Unknown {
                reason: error.to_string(),
            }
        });
        if publish_state(&sender, state) {
            return;
        }
        if sender.is_closed() {
            return;
        }
    }
}

/// Reads what a unit's service appended to its `log` (stdout) and `err` (stderr). Arguments:
/// the offset read up to in each (-1: none yet, start at the end), the size past which a file
/// read to its end moves to `<file>.1`, the most read from one file at once, the unit. Prints
/// `START COUNT START COUNT` (per file: where the bytes start and how many), then the bytes of
/// `log`, then those of `err`.
const LOG_READ: &str = r#"L=$3; C=$4; U="$R/$5"
# `part FILE OFFSET` sets s (where to read from), n (how many bytes) and c (how many bytes
# were cut from the file's front, before o) for one file.
part() {
  f=$1; o=$2; s=0; n=0; c=0
  [ -f "$f" ] || return 0
  size=$(wc -c < "$f")
  if [ "$o" -lt 0 ]; then s=$size; return 0; fi
  if [ "$size" -lt "$o" ]; then o=0; fi
  # Read past the limit: what was read moves to FILE.1 (the one before is dropped). It is
  # cut from the file's front in whole filesystem blocks (fallocate's collapse range, which
  # the kernel orders with the service's appends: nothing it writes meanwhile is lost, and
  # it keeps writing to the same file). A filesystem that cannot (tmpfs, NFS) gets a copy and
  # a truncation once everything is read (what is written in between, milliseconds, is lost).
  if [ "$o" -gt "$L" ]; then
    b=$(stat -f -c %S "$f" 2>/dev/null) || b=4096
    [ "$b" -gt 0 ] 2>/dev/null || b=4096
    k=$((o / b * b)); [ "$k" -ge "$size" ] && k=$((k - b))
    if [ "$k" -gt 0 ] && head -c "$k" "$f" > "$f.1.tmp" \
        && fallocate --collapse-range --offset 0 --length "$k" "$f" 2>/dev/null; then
      mv "$f.1.tmp" "$f.1"; c=$k; o=$((o - k)); size=$((size - k))
    elif [ "$o" -eq "$size" ] && cp "$f" "$f.1.tmp" && : > "$f" && mv "$f.1.tmp" "$f.1"; then
      c=$o; return 0
    else
      rm -f "$f.1.tmp"
    fi
  fi
  # The bytes from o to the size measured above: the file only grows meanwhile.
  s=$o; n=$((size - o)); [ "$n" -gt "$C" ] && n=$C
  return 0
}
part "$U/log" "$1"; os=$s; on=$n; oc=$c
part "$U/err" "$2"; es=$s; en=$n; ec=$c
echo "$os $on $es $en $oc $ec"
[ "$on" -eq 0 ] || tail -c +$((os + 1)) "$U/log" | head -c "$on"
[ "$en" -eq 0 ] || tail -c +$((es + 1)) "$U/err" | head -c "$en"
"#;

/// The most of the service's log read in one poll.
const LOG_CHUNK: i64 = 1024 * 1024;

/// The size past which what Sorat has read of the service's log on a host moves to `log.1`
/// (the one before is dropped).
const LOG_LIMIT: u64 = 16 * 1024 * 1024;

/// Follows the service's output on the host and sends its lines (tagged with the host,
/// release and stream: the supervisor writes stdout to the unit's `log`, stderr to its `err`;
/// within one read, stdout's lines come before stderr's). It reads what was
/// appended to both every second with one short command — no command stays open on the host, so the
/// connection's master can end when Sorat is gone (a `tail -F` left running kept it alive).
async fn tail_log(
    host: Arc<SshHost>,
    unit: &'static str,
    release: u32,
    lines: mpsc::Sender<ServiceLine>,
    from: [i64; 2],
) {
    // Per stream (stdout in `log`, stderr in `err`): the offset read up to (-1: start at the
    // end, only what is written from now on) and the bytes of a line not yet ended.
    let mut offsets = from;
    let mut pending: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let streams = [Stream::Stdout, Stream::Stderr];
    loop {
        let mut behind = false;
        let offset_texts = offsets.map(|offset| offset.to_string());
        let read = host
            .run(
                "cannot read the service's log",
                LOG_READ,
                &[
                    &offset_texts[0],
                    &offset_texts[1],
                    &host.log_limit.to_string(),
                    &LOG_CHUNK.to_string(),
                    unit,
                ],
                None,
            )
            .await;
        if let Ok(ran) = read
            && ran.code == Some(0)
            && let Some(end) = ran.stdout_bytes.iter().position(|byte| *byte == b'\n')
        {
            let header = String::from_utf8_lossy(&ran.stdout_bytes[..end]).into_owned();
            let numbers: Vec<i64> = header
                .split_whitespace()
                .filter_map(|number| number.parse().ok())
                .collect();
            let mut data = &ran.stdout_bytes[end + 1..];
            if let [out_start, out_count, err_start, err_count, out_cut, err_cut] = numbers[..] {
                for (index, (start, count, cut)) in [
                    (out_start, out_count, out_cut),
                    (err_start, err_count, err_cut),
                ]
                .into_iter()
                .enumerate()
                {
                    // Where the file goes on is where it was read up to, less what was cut
                    // from its front; anywhere else, it is a new file.
                    if start != offsets[index] - cut && offsets[index] >= 0 {
                        pending[index].clear();
                    }
                    // Counted in the file's bytes.
                    offsets[index] = start + count;
                    behind |= count >= LOG_CHUNK;
                    let take = usize::try_from(count).unwrap_or(0).min(data.len());
                    pending[index].extend_from_slice(&data[..take]);
                    data = &data[take..];
                    while let Some(end) = pending[index].iter().position(|byte| *byte == b'\n') {
                        let line: Vec<u8> = pending[index].drain(..=end).collect();
                        let text = String::from_utf8_lossy(&line)
                            .trim_end_matches(['\n', '\r'])
                            .to_owned();
                        let sent = lines
                            .send(ServiceLine {
                                host: host.name().to_owned(),
                                release,
                                stream: streams[index],
                                line: text,
                            })
                            .await;
                        if sent.is_err() {
                            return;
                        }
                    }
                }
            }
        }
        if lines.is_closed() {
            return;
        }
        // A full chunk means more is waiting: read on at once.
        if !behind {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::Platform;

    /// The first 64 bytes of an ELF executable: `class` 1 (32-bit) or 2 (64-bit),
    /// little-endian, for `machine`, with the OS ABI `os_abi`.
    fn elf_head(class: u8, machine: u16, os_abi: u8) -> Vec<u8> {
        let mut head = vec![0u8; 64];
        head[..4].copy_from_slice(b"\x7fELF");
        head[4] = class;
        head[5] = 1; // little-endian
        head[6] = 1; // EV_CURRENT
        head[7] = os_abi;
        head[16..18].copy_from_slice(&3u16.to_le_bytes()); // ET_DYN
        head[18..20].copy_from_slice(&machine.to_le_bytes());
        head[20..24].copy_from_slice(&1u32.to_le_bytes());
        head
    }

    #[test]
    fn an_executable_says_which_hosts_run_it() {
        let x86_64 = Platform::of_elf(&elf_head(2, 62, 0)).unwrap();
        assert_eq!(x86_64.to_string(), "Linux x86_64");
        assert!(x86_64.runs_on("Linux x86_64\n"));
        assert!(!x86_64.runs_on("Linux aarch64"));
        assert!(!x86_64.runs_on("FreeBSD amd64"));
        let arm64 = Platform::of_elf(&elf_head(2, 183, 3)).unwrap();
        assert_eq!(arm64.to_string(), "Linux aarch64");
        assert!(arm64.runs_on("Linux aarch64"));
        assert!(!arm64.runs_on("Linux x86_64"));
        let freebsd = Platform::of_elf(&elf_head(2, 62, 9)).unwrap();
        assert!(freebsd.runs_on("FreeBSD amd64") && !freebsd.runs_on("Linux x86_64"));
        // A 32-bit ARM executable; a 64-bit header claiming a 32-bit machine is not known.
        assert!(
            Platform::of_elf(&elf_head(1, 40, 0))
                .unwrap()
                .runs_on("Linux armv7l")
        );
        assert_eq!(Platform::of_elf(&elf_head(2, 40, 0)), None);
        // A host that cannot say is left to try; what is not ELF is not checked.
        assert!(x86_64.runs_on(""));
        assert_eq!(Platform::of_elf(b"#!/bin/sh\nexec sorat \"$@\"\n"), None);
        assert_eq!(Platform::of_elf(&elf_head(2, 62, 0)[..30]), None);
        // This test's own executable runs here.
        let own = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let here = format!("Linux {}", std::env::consts::ARCH);
        assert!(Platform::of_elf(&own[..64]).unwrap().runs_on(&here));
    }
}

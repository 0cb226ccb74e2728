//! A real OpenSSH server on 127.0.0.1 for the SSH tests: its own host key, one authorized
//! user key, a known-hosts file that holds the host key, started as a child process and
//! killed on drop. Self-contained, so that the server's tests include it too (`#[path]`).

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sorat_deploy::SshTarget;

const SSHD: &str = "/usr/sbin/sshd";

/// The user `.ci/test` makes for SSH tests: a plain `/bin/sh` account, as a deploy user
/// is. (Root's shell here sources a `.bashrc` that takes ~0.3 s per command.)
pub const DEPLOY_USER: &str = "sorat-ssh";

/// The user to log in as: [`DEPLOY_USER`] when it exists and the tests run as root, else
/// the user running the tests. Returns its name and uid.
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

/// A running sshd and the files a client needs.
pub struct Sshd {
    /// Where its files live.
    pub dir: tempfile::TempDir,
    /// Its port.
    pub port: u16,
    /// The private key it accepts.
    pub key: PathBuf,
    /// A known-hosts file with its host key.
    pub known_hosts: PathBuf,
    /// The user to log in as (the one running the tests).
    pub user: String,
    child: Child,
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen (package openssh-client) must be installed");
    assert!(status.success(), "ssh-keygen failed");
}

impl Sshd {
    /// Starts sshd on a free port. Panics with what to install when OpenSSH's server is
    /// missing (`.ci/test` installs it).
    pub fn start() -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install openssh-server (`.ci/test` does: apt-get install openssh-server)"
        );
        // Privilege separation needs this folder; it is not there on a machine where sshd
        // never ran.
        if !Path::new("/run/sshd").exists() {
            std::fs::create_dir_all("/run/sshd").expect(
                "/run/sshd is missing and cannot be made: run the tests as root or create it",
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let host_key = dir.path().join("host_key");
        let key = dir.path().join("user_key");
        keygen(&host_key);
        keygen(&key);
        let authorized = dir.path().join("authorized_keys");
        std::fs::copy(key.with_extension("pub"), &authorized).unwrap();
        let mut readable = std::fs::metadata(&authorized).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut readable, 0o644);
        std::fs::set_permissions(&authorized, readable).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {auth}\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nMaxSessions 100\n\
                 MaxStartups 100\nPidFile {pid}\nLogLevel ERROR\n",
                host = host_key.display(),
                auth = authorized.display(),
                pid = dir.path().join("sshd.pid").display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("sshd.log")).unwrap();
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start sshd");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "sshd did not listen on {port}: {}",
                std::fs::read_to_string(dir.path().join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let public = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
        let mut fields = public.split_whitespace();
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(
            &known_hosts,
            format!(
                "[127.0.0.1]:{port} {} {}\n",
                fields.next().unwrap(),
                fields.next().unwrap()
            ),
        )
        .unwrap();
        let (user, uid) = login_user();
        // The hosts' folders go where the login user can write.
        let hosts = dir.path().join("hosts");
        std::fs::create_dir(&hosts).unwrap();
        std::os::unix::fs::chown(&hosts, uid, None).unwrap();
        let mut permissions = std::fs::metadata(dir.path()).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        std::fs::set_permissions(dir.path(), permissions).unwrap();
        Sshd {
            dir,
            port,
            key,
            known_hosts,
            user,
            child,
        }
    }

    /// A folder the login user may write to, for hosts' folders.
    pub fn hosts_dir(&self) -> PathBuf {
        self.dir.path().join("hosts")
    }

    /// A target on this server whose releases live in `dir`.
    pub fn target(&self, name: &str, dir: &Path) -> SshTarget {
        SshTarget {
            name: name.to_owned(),
            address: "127.0.0.1".to_owned(),
            port: self.port,
            user: Some(self.user.clone()),
            key: Some(self.key.clone()),
            known_hosts: Some(self.known_hosts.clone()),
            dir: dir.display().to_string(),
            connect_timeout: Duration::from_secs(5),
            control_dir: std::env::temp_dir(),
        }
    }

    /// What sshd logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Services started on the "hosts" are detached from SSH (as on a real host): a test
        // that failed halfway leaves them running, so their process groups go here.
        for entry in std::fs::read_dir(self.hosts_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            for unit in ["service", "slots/blue", "slots/green", "router"] {
                if let Ok(pid) = std::fs::read_to_string(entry.path().join(unit).join("pid")) {
                    let _ = Command::new("kill")
                        .args(["-s", "KILL", "--", &format!("-{}", pid.trim())])
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

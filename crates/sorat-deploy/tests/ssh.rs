//! Deploys over real SSH: an OpenSSH server on 127.0.0.1 (started per test, its own host
//! key), three "hosts" that are three folders on it, each with its own port, running the
//! Python service under the remote supervisor.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::sshd::Sshd;
use common::{environment, free_port, get, release_files, service_release, wait_version};
use sorat_deploy::{
    HostOutcome, Outcome, ReleaseStatus, SshHost, StopOutcome, Strategy, Target, deploy,
    next_release_number, rollback,
};

fn ssh_targets(sshd: &Sshd, root: &Path, count: usize) -> Vec<Target> {
    (0..count)
        .map(|index| {
            let dir = root.join(format!("host{index}"));
            Target::ssh(
                SshHost::new(sshd.target(&format!("ssh{index}"), &dir)),
                free_port(),
            )
        })
        .collect()
}

async fn versions(targets: &[Target]) -> Vec<String> {
    let mut out = Vec::new();
    for target in targets {
        out.push(
            wait_version(target.port(), Duration::from_secs(5))
                .await
                .unwrap_or_else(|error| format!("down: {error}")),
        );
    }
    out
}

async fn stop_all(targets: &[Target]) {
    for target in targets {
        target.stop(Duration::from_secs(3)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_roll_back_and_fail_over_ssh_on_three_hosts() {
    let sshd = Sshd::start();
    let work = tempfile::tempdir().unwrap();
    let hosts = sshd.hosts_dir();
    let targets = ssh_targets(&sshd, &hosts, 3);
    let env = environment(Duration::from_secs(20));

    assert_eq!(next_release_number(&targets).await.unwrap(), 1);
    let v1 = service_release(work.path(), 1, "v1", "ok");
    let report = deploy(&env, &targets, &v1, Strategy::AllAtOnce).await;
    assert_eq!(
        report.outcome,
        Outcome::Succeeded,
        "{report:#?}\n{}",
        sshd.log()
    );
    assert_eq!(versions(&targets).await, ["v1", "v1", "v1"]);
    for (index, target) in targets.iter().enumerate() {
        let host = hosts.join(format!("host{index}"));
        assert_eq!(
            std::fs::read_link(host.join("current")).unwrap(),
            Path::new("releases/1")
        );
        // The uploaded files reach the cache, by digest, once each, soon after the
        // deploy (a detached job on the host copies and checks them).
        let cached = || {
            std::fs::read_dir(host.join("blobs/sha256"))
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|entry| entry.file_name().to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        let mut expected: Vec<String> = v1
            .files
            .iter()
            .map(|file| file.digest["sha256:".len()..].to_owned())
            .collect();
        expected.sort();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let names = loop {
            let mut names = cached();
            names.sort();
            if names == expected || std::time::Instant::now() > deadline {
                break names;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(names, expected, "server.py, VERSION and MODE, nothing else");
        assert_eq!(
            target.record(1).await.unwrap().status,
            ReleaseStatus::Deployed
        );
        assert!(matches!(
            target.service_state().await,
            Some(sorat_deploy::ServiceState::Running { .. })
        ));
    }

    // v2 rolling, one host at a time.
    assert_eq!(next_release_number(&targets).await.unwrap(), 2);
    let v2 = service_release(work.path(), 2, "v2", "ok");
    let report = deploy(&env, &targets, &v2, Strategy::Rolling { batch: 1 }).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    assert_eq!(versions(&targets).await, ["v2", "v2", "v2"]);

    // A rollback over SSH: every host back on 1, the service restarted and healthy.
    let report = rollback(&env, &targets, None).await.unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    assert_eq!(versions(&targets).await, ["v1", "v1", "v1"]);
    assert_eq!(
        targets[0].record(2).await.unwrap().status,
        ReleaseStatus::RolledBack
    );

    // Forward again, then a release whose health check answers 500 on the second batch:
    // the hosts of the first batch and the failed one go back to 3, none is left on 4.
    let v3 = service_release(work.path(), 3, "v3", "ok");
    let report = deploy(&env, &targets, &v3, Strategy::AllAtOnce).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    let mut bad_env = environment(Duration::from_secs(2));
    bad_env.health.success_threshold = 1;
    let v4 = service_release(work.path(), 4, "v4", "500");
    let report = deploy(&bad_env, &targets, &v4, Strategy::Rolling { batch: 2 }).await;
    assert!(
        matches!(report.outcome, Outcome::RolledBack { .. }),
        "{report:#?}"
    );
    let outcomes: Vec<_> = report
        .hosts
        .iter()
        .map(|host| host.outcome.clone())
        .collect();
    assert_eq!(
        outcomes,
        [
            HostOutcome::FailedRolledBack,
            HostOutcome::FailedRolledBack,
            HostOutcome::NotSwitched
        ],
        "{report:#?}"
    );
    assert!(
        report.hosts[0].errors[0].contains("answered 500"),
        "{report:#?}"
    );
    assert_eq!(versions(&targets).await, ["v3", "v3", "v3"]);
    for target in &targets {
        assert_eq!(target.current().await.unwrap(), Some(3));
    }
    assert_eq!(
        targets[0].record(4).await.unwrap().status,
        ReleaseStatus::Failed
    );

    // The service's output reaches the log file on the host.
    let log = std::fs::read_to_string(hosts.join("host0/service/log")).unwrap();
    assert!(log.contains("listening on"), "{log}");
    stop_all(&targets).await;
    for target in &targets {
        assert!(get(target.port(), "/version").await.is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_exits_at_once_is_rolled_back_and_stopped_for_good() {
    let sshd = Sshd::start();
    let work = tempfile::tempdir().unwrap();
    let targets = ssh_targets(&sshd, &sshd.hosts_dir(), 1);
    let env = environment(Duration::from_secs(20));
    let v1 = service_release(work.path(), 1, "v1", "ok");
    let report = deploy(&env, &targets, &v1, Strategy::AllAtOnce).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    let broken = service_release(work.path(), 2, "v2", "exit");
    let report = deploy(&env, &targets, &broken, Strategy::AllAtOnce).await;
    assert!(
        matches!(report.outcome, Outcome::RolledBack { .. }),
        "{report:#?}"
    );
    assert!(
        report.hosts[0].errors[0].contains("would not stay up"),
        "{report:#?}"
    );
    assert_eq!(versions(&targets).await, ["v1"]);
    assert_eq!(
        targets[0].stop(Duration::from_secs(3)).await,
        StopOutcome::Terminated
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_host_key_an_unreachable_host_and_a_bad_digest_abort_before_any_switch() {
    let sshd = Sshd::start();
    let work = tempfile::tempdir().unwrap();
    let env = environment(Duration::from_secs(10));
    let v1 = service_release(work.path(), 1, "v1", "ok");

    // The known-hosts file holds another key for this address and port.
    let other = tempfile::tempdir().unwrap();
    let impostor = other.path().join("key");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&impostor)
        .status()
        .unwrap();
    assert!(status.success());
    let public = std::fs::read_to_string(impostor.with_extension("pub")).unwrap();
    let mut fields = public.split_whitespace();
    let wrong_known_hosts = other.path().join("known_hosts");
    std::fs::write(
        &wrong_known_hosts,
        format!(
            "[127.0.0.1]:{} {} {}\n",
            sshd.port,
            fields.next().unwrap(),
            fields.next().unwrap()
        ),
    )
    .unwrap();
    let good_dir = sshd.hosts_dir().join("good");
    let bad_dir = sshd.hosts_dir().join("bad");
    let mut mismatched = sshd.target("mismatched", &bad_dir);
    mismatched.known_hosts = Some(wrong_known_hosts);
    let targets = vec![
        Target::ssh(SshHost::new(sshd.target("good", &good_dir)), free_port()),
        Target::ssh(SshHost::new(mismatched), free_port()),
    ];
    let report = deploy(&env, &targets, &v1, Strategy::AllAtOnce).await;
    let Outcome::Aborted { reason } = &report.outcome else {
        panic!("{report:#?}")
    };
    assert!(reason.contains("host mismatched"), "{reason}");
    assert!(
        reason.contains("host key") || reason.contains("Host key"),
        "{reason}"
    );
    assert_eq!(report.hosts[1].outcome, HostOutcome::PrepareFailed);
    // Nothing switched, nothing written through the mismatched connection.
    assert!(!good_dir.join("current").exists());
    assert!(!bad_dir.exists());

    // A host with nothing listening.
    let mut closed = sshd.target("closed", &work.path().join("closed"));
    closed.port = free_port();
    let targets = vec![Target::ssh(SshHost::new(closed), free_port())];
    let report = deploy(&env, &targets, &v1, Strategy::AllAtOnce).await;
    let Outcome::Aborted { reason } = &report.outcome else {
        panic!("{report:#?}")
    };
    assert!(reason.contains("Connection refused"), "{reason}");

    // A file whose digest is not its content's: refused on the host, no blob or release
    // left behind.
    let targets = ssh_targets(&sshd, &sshd.hosts_dir(), 1);
    let mut lying = service_release(work.path(), 1, "v1", "ok");
    let truth = release_files(
        work.path(),
        "other",
        &[("VERSION", "something else", 0o644)],
    );
    lying.files[1].digest = truth[0].digest.clone();
    let report = deploy(&env, &targets, &lying, Strategy::AllAtOnce).await;
    let Outcome::Aborted { reason } = &report.outcome else {
        panic!("{report:#?}")
    };
    assert!(reason.contains("digest mismatch"), "{reason}");
    let host = sshd.hosts_dir().join("host0");
    assert!(!host.join("releases/1").exists());
    assert!(!host.join("releases/1.partial").exists());
    let wrong_blob = host
        .join("blobs/sha256")
        .join(&truth[0].digest["sha256:".len()..]);
    assert!(!wrong_blob.exists());
    assert!(!host.join("current").exists());
}

/// Unmounts a tmpfs on drop.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_on_the_host_fails_the_upload_and_leaves_the_host_as_it_was() {
    let sshd = Sshd::start();
    let work = tempfile::tempdir().unwrap();
    let host_dir = sshd.hosts_dir().join("small");
    std::fs::create_dir_all(&host_dir).unwrap();
    let uid = String::from_utf8(
        std::process::Command::new("id")
            .args(["-u", &sshd.user])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    // A 1 MiB file system for the host's folder: room for v1, not for a 2 MiB file.
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o"])
        .arg(format!("size=1m,mode=0755,uid={}", uid.trim()))
        .arg("tmpfs")
        .arg(&host_dir)
        .output()
        .unwrap();
    if !mounted.status.success() {
        println!(
            "skipped: cannot mount a small tmpfs to fill ({}); this needs root with CAP_SYS_ADMIN",
            String::from_utf8_lossy(&mounted.stderr).trim()
        );
        return;
    }
    let _unmount = Mounted(host_dir.clone());
    let targets = vec![Target::ssh(
        SshHost::new(sshd.target("small", &host_dir)),
        free_port(),
    )];
    let env = environment(Duration::from_secs(20));
    let v1 = service_release(work.path(), 1, "v1", "ok");
    let report = deploy(&env, &targets, &v1, Strategy::AllAtOnce).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");

    let mut v2 = service_release(work.path(), 2, "v2", "ok");
    let big = work.path().join("big.bin");
    let noise: Vec<u8> = (0..2 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&big, &noise).unwrap();
    v2.files.push(sorat_deploy::ReleaseFile {
        path: "data/big.bin".into(),
        digest: sorat_deploy::digest_file(&big).unwrap(),
        source: big,
        mode: 0o644,
    });
    let report = deploy(&env, &targets, &v2, Strategy::AllAtOnce).await;
    let Outcome::Aborted { reason } = &report.outcome else {
        panic!("{report:#?}")
    };
    assert!(reason.contains("is the disk full?"), "{reason}");
    assert_eq!(targets[0].current().await.unwrap(), Some(1));
    assert_eq!(targets[0].releases().await.unwrap(), [1]);
    assert_eq!(
        wait_version(targets[0].port(), Duration::from_secs(5))
            .await
            .unwrap(),
        "v1"
    );
    // No partial upload is left to fill the disk further.
    let leftovers: Vec<_> = ["blobs/sha256", "releases"]
        .iter()
        .flat_map(|folder| std::fs::read_dir(host_dir.join(folder)).unwrap().flatten())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".upload") || name.ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    stop_all(&targets).await;
}

/// The cache at work: a release's uploaded files are copied into `blobs/sha256` after the
/// deploy, and the next release with the same content is built from there, without reading
/// the local files again (here they are gone: an upload would fail). Two paths with the same
/// content are uploaded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_release_with_the_same_content_is_built_from_the_hosts_cache() {
    let sshd = Sshd::start();
    let work = tempfile::tempdir().unwrap();
    let targets = ssh_targets(&sshd, &sshd.hosts_dir(), 1);
    let host = sshd.hosts_dir().join("host0");
    let env = environment(Duration::from_secs(20));
    let mut v1 = service_release(work.path(), 1, "v1", "ok");
    let copy = release_files(work.path(), "copy", &[("bin/tool", "v1", 0o755)]);
    v1.files.extend(copy);
    assert_eq!(
        v1.files[1].digest, v1.files[3].digest,
        "VERSION and bin/tool"
    );
    let report = deploy(&env, &targets, &v1, Strategy::AllAtOnce).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    let release = host.join("releases/1");
    assert_eq!(
        std::fs::read_to_string(release.join("bin/tool")).unwrap(),
        "v1"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&release.join("bin/tool")), 0o755);
    assert_eq!(mode(&release.join("VERSION")), 0o644);

    let blob = |file: &sorat_deploy::ReleaseFile| {
        host.join("blobs/sha256")
            .join(&file.digest["sha256:".len()..])
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !v1.files.iter().all(|file| blob(file).exists()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the cache was not filled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut v2 = v1.clone();
    v2.number = 2;
    for file in &v2.files {
        let _ = std::fs::remove_file(&file.source);
    }
    let report = deploy(&env, &targets, &v2, Strategy::AllAtOnce).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    assert_eq!(
        std::fs::read_to_string(host.join("releases/2/server.py")).unwrap(),
        common::SERVER_PY
    );
    assert_eq!(mode(&host.join("releases/2/bin/tool")), 0o755);
    assert_eq!(versions(&targets).await, ["v1"]);

    // A cached blob that went bad is not used: it is dropped and uploaded again (which
    // fails here, the local file being gone), and the host stays as it was.
    std::fs::write(blob(&v1.files[0]), "garbage").unwrap();
    let mut v3 = v1.clone();
    v3.number = 3;
    let report = deploy(&env, &targets, &v3, Strategy::AllAtOnce).await;
    let Outcome::Aborted { reason } = &report.outcome else {
        panic!("{report:#?}")
    };
    assert!(reason.contains("cannot open"), "{reason}");
    assert!(!blob(&v1.files[0]).exists());
    assert!(!host.join("releases/3.partial").exists());
    assert_eq!(targets[0].current().await.unwrap(), Some(2));
    stop_all(&targets).await;
}

/// Waits until the host has no cache job left (its files start with `.cache`).
async fn caches_settled(host: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let busy = std::fs::read_dir(host.join("blobs/sha256")).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|entry| entry.file_name().to_string_lossy().starts_with(".cache"))
        });
        if !busy {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a cache job did not end"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Pruning after a deploy keeps `keep_releases` releases and the blobs they use, and only
/// those: the first release's own content leaves the cache with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_removes_old_releases_and_the_blobs_only_they_used() {
    let sshd = Sshd::start();
    let work = tempfile::tempdir().unwrap();
    let targets = ssh_targets(&sshd, &sshd.hosts_dir(), 1);
    let host = sshd.hosts_dir().join("host0");
    let mut env = environment(Duration::from_secs(20));
    env.keep_releases = 2;
    let blob = |file: &sorat_deploy::ReleaseFile| {
        host.join("blobs/sha256")
            .join(&file.digest["sha256:".len()..])
    };
    let mut releases = Vec::new();
    for (number, version) in [(1, "v1"), (2, "v2"), (3, "v3")] {
        let release = service_release(work.path(), number, version, "ok");
        let report = deploy(&env, &targets, &release, Strategy::AllAtOnce).await;
        assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
        caches_settled(&host).await;
        releases.push(release);
    }
    // Prune once more (nothing to remove) so that the last deploy's blobs are in too.
    targets[0].ssh_host().unwrap().prune(2, &[]).await.unwrap();
    caches_settled(&host).await;
    assert_eq!(targets[0].releases().await.unwrap(), [2, 3]);
    // server.py and MODE are the same in every release; VERSION differs.
    assert!(
        !blob(&releases[0].files[1]).exists(),
        "v1's VERSION was kept"
    );
    assert!(blob(&releases[1].files[1]).exists(), "v2's VERSION is gone");
    assert!(blob(&releases[2].files[1]).exists(), "v3's VERSION is gone");
    assert!(blob(&releases[2].files[0]).exists(), "server.py is gone");
    // A number is never used twice on a host, also after its release was pruned.
    for number in [1, 3] {
        let mut again = releases[0].clone();
        again.number = number;
        let report = deploy(&env, &targets, &again, Strategy::AllAtOnce).await;
        let Outcome::Aborted { reason } = &report.outcome else {
            panic!("{report:#?}")
        };
        assert!(
            reason.contains("numbers are never reused and 3 was already used here"),
            "{reason}"
        );
    }
    assert_eq!(targets[0].current().await.unwrap(), Some(3));
    stop_all(&targets).await;
}

/// A service that writes a lot, for seconds: every line reaches Sorat once and in order (the
/// log is read in chunks, without waiting between full ones), also across the many rotations
/// of its 64 KiB log while it writes: what was read moves to `log.1`, cut from the log's
/// front, and nothing written meanwhile is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_log_is_read_in_full_and_rotated_past_its_limit() {
    // About 2.6 MiB over a few seconds: some 40 rotations while the service writes.
    const LINES: u32 = 30_000;
    let sshd = Sshd::start();
    let work = tempfile::tempdir().unwrap();
    let host = sshd.hosts_dir().join("chatty");
    let (sender, mut receiver) = tokio::sync::mpsc::channel(100_000);
    let targets = vec![
        Target::ssh(
            SshHost::new(sshd.target("chatty", &host)).with_log_limit(64 * 1024),
            free_port(),
        )
        .with_lines(sender),
    ];
    let mut env = environment(Duration::from_secs(20));
    env.service.command = format!(
        r#"python3 -c 'import sys, time
for i in range({LINES}):
    print("line %d %s" % (i, "x" * 80))
    if i % 20 == 0: sys.stdout.flush(); time.sleep(0.002)'; exec python3 server.py"#
    );
    let report = deploy(
        &env,
        &targets,
        &service_release(work.path(), 1, "v1", "ok"),
        Strategy::AllAtOnce,
    )
    .await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    let mut numbers = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while numbers.len() < LINES as usize {
        let Ok(Some(line)) = tokio::time::timeout_at(deadline, receiver.recv()).await else {
            break;
        };
        if let Some(rest) = line.line.strip_prefix("line ") {
            assert_eq!(line.stream, sorat_deploy::Stream::Stdout, "{line:?}");
            numbers.push(rest.split(' ').next().unwrap().parse::<u32>().unwrap());
        }
    }
    let expected: Vec<u32> = (0..LINES).collect();
    if numbers != expected {
        let missing: Vec<&u32> = expected.iter().filter(|n| !numbers.contains(n)).collect();
        panic!(
            "{} lines arrived of {LINES}; missing: {:?}",
            numbers.len(),
            &missing[..missing.len().min(20)]
        );
    }
    // What was read went to log.1 (the last cut of it), and the log keeps only the rest once
    // the read after the last line has cut it.
    let log = host.join("service/log");
    let size = || std::fs::metadata(&log).map_or(u64::MAX, |meta| meta.len());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !host.join("service/log.1").exists() || size() >= 64 * 1024 {
        assert!(
            std::time::Instant::now() < deadline,
            "the log was not rotated: it has {} bytes",
            size()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Cut while the service wrote (each read is at most a 1 MiB chunk), not once at the end:
    // the last cut is not the whole log from its first line.
    let rotated = std::fs::read_to_string(host.join("service/log.1")).unwrap();
    assert!(rotated.contains("xxxx\nline "), "log.1 holds what was read");
    if collapse_range_works(&host) {
        assert!(
            !rotated.starts_with("line 0 ") && rotated.len() < 1536 * 1024,
            "log.1 has {} bytes from {:?}",
            rotated.len(),
            &rotated[..rotated.len().min(20)]
        );
    } else {
        println!(
            "skipping the check of cuts while the service writes: {} has no fallocate --collapse-range (copy-truncate at rest instead)",
            host.display()
        );
    }
    // What the service writes after the rotation still arrives.
    let _ = get(targets[0].port(), "/after-rotation").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut after = None;
    while after.is_none() {
        let Ok(Some(line)) = tokio::time::timeout_at(deadline, receiver.recv()).await else {
            break;
        };
        if line.line.contains("GET /after-rotation") {
            after = Some(line);
        }
    }
    // The service logs its requests to stderr: the line says so.
    let after = after.expect("no line arrived after the rotation");
    assert_eq!(after.stream, sorat_deploy::Stream::Stderr, "{after:?}");
    assert!(
        std::fs::read_to_string(host.join("service/err"))
            .unwrap()
            .contains("GET /after-rotation"),
        "stderr is kept in the unit's err file"
    );
    stop_all(&targets).await;
}

/// Whether the filesystem of `dir` cuts a file's front (`fallocate --collapse-range`).
fn collapse_range_works(dir: &Path) -> bool {
    let probe = dir.join("collapse-probe");
    let made = std::fs::write(&probe, vec![b'x'; 64 * 1024]).is_ok();
    let cut = made
        && std::process::Command::new("fallocate")
            .args(["--collapse-range", "--offset", "0", "--length", "4096"])
            .arg(&probe)
            .status()
            .is_ok_and(|status| status.success());
    let _ = std::fs::remove_file(&probe);
    cut
}

/// The service's environment reaches it unchanged, whatever the characters, through a file
/// only the login user can read: no value is on a command line on the host, where `ps`
/// would show it to every user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_environment_travels_in_a_private_file_not_on_a_command_line() {
    use std::os::unix::fs::PermissionsExt as _;
    let sshd = Sshd::start();
    let work = tempfile::tempdir().unwrap();
    let targets = ssh_targets(&sshd, &sshd.hosts_dir(), 1);
    let host = sshd.hosts_dir().join("host0");
    let mut env = environment(Duration::from_secs(20));
    let greeting = "it's \"quoted\" $HOME `id` \\ and\na second line";
    env.service.env = vec![("GREETING".to_owned(), greeting.to_owned())];
    let report = deploy(
        &env,
        &targets,
        &service_release(work.path(), 1, "v1", "ok"),
        Strategy::AllAtOnce,
    )
    .await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    let (status, body) = get(targets[0].port(), "/env").await.unwrap();
    assert_eq!((status, body.as_str()), (200, greeting));
    let file = host.join("service/env");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", file.display());
    // Neither the supervisor nor the service carries the value in its arguments.
    let pid = std::fs::read_to_string(host.join("service/pid")).unwrap();
    let mut seen = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The process group is the fifth field of /proc/<pid>/stat, after `(comm)`.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        if fields.get(2) != Some(&pid.trim()) {
            continue;
        }
        seen += 1;
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains("quoted"),
            "{}",
            String::from_utf8_lossy(&cmdline)
        );
    }
    assert!(
        seen >= 2,
        "the supervisor and the service: {seen} processes"
    );
    stop_all(&targets).await;
}

/// A release whose service lives in a folder of its own (`working_dir`), on a local host, an
/// SSH host and a blue-green local host; the next release runs from its root again, and a
/// rollback runs the first as it was recorded, in its folder. The health check is a command,
/// which runs where the service runs: it finds `MODE` there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_runs_in_its_working_dir_and_a_rollback_keeps_it() {
    let sshd = Sshd::start();
    let work = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    let targets = vec![
        Target::new(
            sorat_deploy::Host::new("local", local.path().join("plain")),
            free_port(),
        ),
        Target::ssh(
            SshHost::new(sshd.target("remote", &sshd.hosts_dir().join("remote"))),
            free_port(),
        ),
        Target::new(
            sorat_deploy::Host::new("slotted", local.path().join("slotted")),
            free_port(),
        )
        .with_slots(sorat_deploy::BlueGreenSlots {
            ports: [free_port(), free_port()],
            listen: std::net::IpAddr::from([127, 0, 0, 1]),
            scale_down_delay: Duration::from_secs(600),
        }),
    ];
    let mut env = environment(Duration::from_secs(20));
    env.service.working_dir = Some("app".to_owned());
    env.health.probe = sorat_deploy::Probe::Command {
        command: "test -f MODE && python3 -c 'import os, socket; \
                  socket.create_connection((\"127.0.0.1\", int(os.environ[\"PORT\"])), 1)'"
            .to_owned(),
    };
    let nested = sorat_deploy::ReleaseSpec {
        number: 1,
        meta: common::meta("v1"),
        files: release_files(
            work.path(),
            "1",
            &[
                ("app/server.py", common::SERVER_PY, 0o644),
                ("app/VERSION", "v1", 0o644),
                ("app/MODE", "ok", 0o644),
            ],
        ),
    };
    // The plain hosts all at once, the slotted one blue-green.
    let deploy_everywhere = |env: sorat_deploy::Environment, release: sorat_deploy::ReleaseSpec| {
        let targets = &targets;
        async move {
            let plain = deploy(&env, &targets[..2], &release, Strategy::AllAtOnce).await;
            assert_eq!(plain.outcome, Outcome::Succeeded, "{plain:#?}");
            let blue_green = Strategy::BlueGreen {
                pre_promotion: None,
                auto_promote: true,
            };
            let slotted = deploy(&env, &targets[2..], &release, blue_green).await;
            assert_eq!(slotted.outcome, Outcome::Succeeded, "{slotted:#?}");
        }
    };
    deploy_everywhere(env.clone(), nested).await;
    assert_eq!(versions(&targets).await, ["v1", "v1", "v1"]);
    // Release 2 has its service at the root and no working_dir.
    env.service.working_dir = None;
    deploy_everywhere(env.clone(), service_release(work.path(), 2, "v2", "ok")).await;
    assert_eq!(versions(&targets).await, ["v2", "v2", "v2"]);
    // Back to 1: it runs in `app` again, as recorded, although the environment says nothing.
    let report = rollback(&env, &targets, Some(1)).await.unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    assert_eq!(versions(&targets).await, ["v1", "v1", "v1"]);
    stop_all(&targets).await;
}

//! A host's releases on real folders: prepare, verify, switch, list, prune.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{meta, release_files};
use sorat_deploy::{Host, ReleaseError, ReleaseFile, ReleaseStatus};

fn host_with(dir: &tempfile::TempDir, numbers: &[u32]) -> Host {
    let host = Host::new("h1", dir.path().join("host"));
    for number in numbers {
        let files = release_files(
            dir.path(),
            &number.to_string(),
            &[("app.txt", &format!("release {number}"), 0o644)],
        );
        host.prepare(*number, &meta(&format!("1.{number}")), &files)
            .unwrap();
    }
    host
}

#[test]
fn prepare_copies_files_with_modes_and_writes_release_json() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::new("h1", dir.path().join("host"));
    let files = release_files(
        dir.path(),
        "a",
        &[
            ("bin/run.sh", "#!/bin/sh\necho hi\n", 0o755),
            ("conf/app.toml", "x = 1\n", 0o600),
        ],
    );
    let record = host.prepare(1, &meta("1.0.0"), &files).unwrap();
    let folder = host.release_path(1);
    assert_eq!(
        std::fs::read_to_string(folder.join("bin/run.sh")).unwrap(),
        "#!/bin/sh\necho hi\n"
    );
    let mode = std::fs::metadata(folder.join("bin/run.sh"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o755);
    let mode = std::fs::metadata(folder.join("conf/app.toml"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let stored = host.record(1).unwrap();
    assert_eq!(stored, record);
    assert_eq!(stored.number, 1);
    assert_eq!(stored.artifact, "web@1.0.0");
    assert_eq!(stored.who, "tester");
    assert_eq!(stored.status, ReleaseStatus::Prepared);
    assert_eq!(stored.files.len(), 2);
    assert_eq!(host.releases().unwrap(), vec![1]);
    assert_eq!(host.current().unwrap(), None);
    assert_eq!(host.last_number().unwrap(), 1);
}

#[test]
fn prepare_with_a_wrong_digest_fails_and_leaves_no_release() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::new("h1", dir.path().join("host"));
    let mut files = release_files(
        dir.path(),
        "a",
        &[("a.txt", "good", 0o644), ("b.txt", "bad", 0o644)],
    );
    let wrong = format!("sha256:{}", "0".repeat(64));
    files[1].digest = wrong.clone();
    let error = host.prepare(1, &meta("1.0.0"), &files).unwrap_err();
    match &error {
        ReleaseError::DigestMismatch {
            path,
            expected,
            actual,
        } => {
            assert_eq!(path, &PathBuf::from("b.txt"));
            assert_eq!(expected, &wrong);
            assert_ne!(actual, &wrong);
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(error.to_string().contains("digest mismatch"), "{error}");
    assert!(!host.release_path(1).exists());
    assert!(!dir.path().join("host/releases/1.partial").exists());
    assert!(host.releases().unwrap().is_empty());
    // The number was never completed, so it can be used by a correct retry.
    let good = release_files(dir.path(), "b", &[("a.txt", "good", 0o644)]);
    host.prepare(1, &meta("1.0.0"), &good).unwrap();
    assert_eq!(host.releases().unwrap(), vec![1]);
}

#[test]
fn prepare_refuses_bad_digests_paths_and_used_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_with(&dir, &[1, 2]);
    let good = release_files(dir.path(), "x", &[("a.txt", "a", 0o644)]);

    let mut malformed = good.clone();
    malformed[0].digest = "md5:abc".to_owned();
    assert!(matches!(
        host.prepare(3, &meta("3"), &malformed),
        Err(ReleaseError::InvalidDigest(_))
    ));

    for bad in ["../escape.txt", "/etc/passwd", ""] {
        let files = vec![ReleaseFile {
            path: PathBuf::from(bad),
            ..good[0].clone()
        }];
        assert!(
            matches!(
                host.prepare(3, &meta("3"), &files),
                Err(ReleaseError::InvalidPath(_))
            ),
            "{bad}"
        );
    }
    assert!(!dir.path().join("host/escape.txt").exists());

    for used in [0, 1, 2] {
        let error = host.prepare(used, &meta("x"), &good).unwrap_err();
        assert!(
            matches!(error, ReleaseError::NumberUsed { .. }),
            "{used}: {error}"
        );
    }
    // Numbers are never reused, also after the release was pruned.
    host.switch(2).unwrap();
    host.prune(1, &[]).unwrap();
    assert_eq!(host.releases().unwrap(), vec![2]);
    assert!(matches!(
        host.prepare(1, &meta("x"), &good),
        Err(ReleaseError::NumberUsed { .. })
    ));
    host.prepare(3, &meta("3"), &good).unwrap();
    assert_eq!(host.releases().unwrap(), vec![2, 3]);
}

#[test]
fn a_partial_release_left_by_a_crash_is_not_listed_and_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_with(&dir, &[1]);
    let partial = dir.path().join("host/releases/2.partial");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("half.txt"), "half").unwrap();
    assert_eq!(host.releases().unwrap(), vec![1]);
    assert!(matches!(
        host.switch(2),
        Err(ReleaseError::NotFound { number: 2, .. })
    ));
    let files = release_files(dir.path(), "2", &[("a.txt", "whole", 0o644)]);
    host.prepare(2, &meta("2"), &files).unwrap();
    assert!(!partial.exists());
    assert!(!host.release_path(2).join("half.txt").exists());
    assert_eq!(host.releases().unwrap(), vec![1, 2]);
}

#[test]
fn switch_points_current_at_the_release_and_status_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_with(&dir, &[1, 2]);
    host.switch(1).unwrap();
    assert_eq!(host.current().unwrap(), Some(1));
    assert_eq!(
        std::fs::read_to_string(host.current_path().join("app.txt")).unwrap(),
        "release 1"
    );
    host.switch(2).unwrap();
    assert_eq!(host.current().unwrap(), Some(2));
    assert_eq!(
        std::fs::read_link(host.current_path()).unwrap(),
        PathBuf::from("releases/2"),
        "the link is relative, so the host folder can move"
    );
    assert_eq!(host.previous(2).unwrap(), Some(1));
    assert_eq!(host.previous(1).unwrap(), None);
    assert!(matches!(
        host.switch(9),
        Err(ReleaseError::NotFound { number: 9, .. })
    ));
    assert_eq!(host.current().unwrap(), Some(2));
    host.set_status(2, ReleaseStatus::Deployed).unwrap();
    assert_eq!(host.record(2).unwrap().status, ReleaseStatus::Deployed);
    // No temporary links are left beside `current`.
    let leftovers: Vec<_> = std::fs::read_dir(host.root())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("current."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    host.clear_current().unwrap();
    assert_eq!(host.current().unwrap(), None);
}

#[test]
fn current_is_always_a_valid_release_while_switching_in_a_loop() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_with(&dir, &[1, 2]);
    host.switch(1).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let host = host.clone();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut reads = 0u64;
            let mut seen = [false; 2];
            while !stop.load(Ordering::Relaxed) {
                // Every read must find the link and a whole release behind it.
                let target = std::fs::read_link(host.current_path())
                    .unwrap_or_else(|error| panic!("current missing after {reads} reads: {error}"));
                let content =
                    std::fs::read_to_string(host.root().join(&target).join("app.txt")).unwrap();
                match content.as_str() {
                    "release 1" => seen[0] = true,
                    "release 2" => seen[1] = true,
                    other => panic!("unexpected content {other}"),
                }
                reads += 1;
            }
            (reads, seen)
        })
    };
    for round in 0..500 {
        host.switch(if round % 2 == 0 { 2 } else { 1 }).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let (reads, seen) = reader.join().unwrap();
    assert!(reads > 0);
    assert!(seen[0] && seen[1], "the reader saw both releases: {seen:?}");
}

#[test]
fn prune_keeps_the_last_releases_and_refuses_current_and_protected() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_with(&dir, &[1, 2, 3, 4, 5, 6]);
    host.switch(6).unwrap();
    assert_eq!(host.prune(4, &[5]).unwrap(), vec![1, 2]);
    assert_eq!(host.releases().unwrap(), vec![3, 4, 5, 6]);
    assert!(host.prune(10, &[]).unwrap().is_empty());

    // Back on 3 (a rollback): pruning to 2 would remove the current release.
    host.switch(3).unwrap();
    let error = host.prune(2, &[]).unwrap_err();
    assert!(
        matches!(
            error,
            ReleaseError::Refused {
                number: 3,
                why: "the current release",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("refusing to remove release 3"),
        "{error}"
    );
    assert_eq!(
        host.releases().unwrap(),
        vec![3, 4, 5, 6],
        "nothing removed on refusal"
    );

    // Protected: the release a rollback would need.
    host.switch(6).unwrap();
    let error = host.prune(1, &[4]).unwrap_err();
    assert!(
        matches!(error, ReleaseError::Refused { number: 4, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("a rollback needs it"), "{error}");
    assert_eq!(host.releases().unwrap(), vec![3, 4, 5, 6]);

    // Removing one by one follows the same rules.
    assert!(matches!(
        host.remove(6, &[]),
        Err(ReleaseError::Refused { number: 6, .. })
    ));
    assert!(matches!(
        host.remove(5, &[5]),
        Err(ReleaseError::Refused { number: 5, .. })
    ));
    host.remove(3, &[]).unwrap();
    assert!(matches!(
        host.remove(3, &[]),
        Err(ReleaseError::NotFound { number: 3, .. })
    ));
    assert_eq!(host.prune(2, &[]).unwrap(), vec![4]);
    assert_eq!(host.releases().unwrap(), vec![5, 6]);
    assert_eq!(host.current().unwrap(), Some(6));
}

//! Secrets never leave the run unmasked: not on the terminal, not in stored logs, not in the
//! record. Multi-line secrets are masked line by line, a trailing newline is not part of the
//! value, `::add-mask::` hides values made at run time, and short secrets are refused.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod common;

use common::{Outcome, Project, job, step};

/// Asserts that `secret` appears nowhere the run left text: standard output and error,
/// every stored log, and the stored record.
fn assert_nowhere(project: &Project, outcome: &Outcome, secret: &str) {
    assert!(
        !outcome.stdout.contains(secret),
        "`{secret}` leaked to stdout:\n{}",
        outcome.stdout
    );
    assert!(
        !outcome.stderr.contains(secret),
        "`{secret}` leaked to stderr:\n{}",
        outcome.stderr
    );
    let logs = project.all_logs();
    assert!(!logs.is_empty(), "the run stored no logs");
    for (path, text) in &logs {
        assert!(
            !text.contains(secret),
            "`{secret}` leaked to {}:\n{text}",
            path.display()
        );
    }
    let record = std::fs::read_to_string(project.run_dir(1).join("run.json")).unwrap();
    assert!(!record.contains(secret), "`{secret}` leaked to run.json");
}

#[test]
fn a_secret_from_the_command_line_is_masked_everywhere() {
    let secret = "s3cr3t-Value-81727";
    let project = Project::new(
        r#"
on: push
jobs:
  leak:
    steps:
      - id: leak
        env:
          TOKEN: ${{ secrets.TOKEN }}
        run: |
          echo "token=$TOKEN"
          echo "inline ${{ secrets.TOKEN }}"
          echo "$TOKEN" >&2
          echo "out=$TOKEN" >> "$GITHUB_OUTPUT"
          echo "summary $TOKEN" >> "$GITHUB_STEP_SUMMARY"
          [ "$TOKEN" = "s3cr3t-Value-81727" ] && echo "the step got the real value"
"#,
    );
    let token = format!("TOKEN={secret}");
    for output in ["text", "json"] {
        let _ = std::fs::remove_dir_all(&project.data);
        let outcome = project.run(&["--secret", &token, "--output", output]);
        outcome.expect_code(0);
        assert_nowhere(&project, &outcome, secret);
        assert!(outcome.showed("token=***"));
        assert!(outcome.showed("inline ***"));
        assert!(outcome.showed("the step got the real value"));
        let record = project.stored_record(1);
        let leak = step(job(&record, "leak"), "leak");
        assert_eq!(leak["outputs"]["out"], "***");
        assert_eq!(leak["summary"], "summary ***\n");
    }
}

#[test]
fn a_secret_taken_from_the_environment_is_masked() {
    let secret = "env-secret-value-5521";
    let project = Project::new(
        r#"
on: push
jobs:
  leak:
    steps:
      - run: echo "value ${{ secrets.FROM_ENV }}"
"#,
    );
    let mut command = project.sorat(&[
        "run",
        project.repo.to_str().unwrap(),
        "--data",
        project.data.to_str().unwrap(),
        "--secret",
        "FROM_ENV",
    ]);
    command.env("FROM_ENV", secret);
    let outcome = common::finish(command.spawn().unwrap());
    outcome.expect_code(0);
    assert!(
        outcome.stdout.contains("value ***"),
        "stdout: {}",
        outcome.stdout
    );
    let logs = project.all_logs();
    for (path, text) in &logs {
        assert!(!text.contains(secret), "leaked to {}", path.display());
    }
}

#[test]
fn a_multi_line_secret_from_a_secrets_file_is_masked_line_by_line() {
    let project = Project::new(
        r#"
on: push
jobs:
  key:
    steps:
      - env:
          KEY: ${{ secrets.KEY }}
        run: |
          printf '%s\n' "$KEY"
          echo "second alone: $(printf '%s\n' "$KEY" | sed -n 2p)"
          echo "first then text: $(printf '%s\n' "$KEY" | head -n 1) and more"
          echo "lines: $(printf '%s\n' "$KEY" | wc -l)"
"#,
    );
    let secrets_file = project.scratch_file("secrets.env");
    std::fs::write(
        &secrets_file,
        "# the deploy key\nKEY=\"-----BEGIN TEST KEY-----\nMIIEfirstlineAAAA\nsecondlineBBBBzz\n-----END TEST KEY-----\"\nOTHER=plain-value-9999\n",
    )
    .unwrap();
    let outcome = project.run(&["--secrets-file", secrets_file.to_str().unwrap()]);
    outcome.expect_code(0);
    for part in [
        "-----BEGIN TEST KEY-----",
        "MIIEfirstlineAAAA",
        "secondlineBBBBzz",
        "-----END TEST KEY-----",
    ] {
        assert_nowhere(&project, &outcome, part);
    }
    assert!(outcome.showed("second alone: ***"));
    assert!(outcome.showed("first then text: *** and more"));
    // The step got all four lines of the real value.
    assert!(outcome.showed("lines: 4"));
}

#[test]
fn a_secret_with_a_trailing_newline_is_masked() {
    let project = Project::new(
        r#"
on: push
jobs:
  trail:
    steps:
      - env:
          FROM_FILE: ${{ secrets.FROM_FILE }}
          FROM_FLAG: ${{ secrets.FROM_FLAG }}
        run: |
          printf '%s' "$FROM_FILE"
          echo
          echo "file: $FROM_FILE"
          printf 'flag: %s' "$FROM_FLAG"
          echo "bytes: $(printf '%s' "$FROM_FLAG" | wc -c)"
"#,
    );
    let secrets_file = project.scratch_file("secrets.env");
    std::fs::write(
        &secrets_file,
        "FROM_FILE=\"trailing-file-secret-4242\\n\"\n",
    )
    .unwrap();
    let outcome = project.run(&[
        "--secrets-file",
        secrets_file.to_str().unwrap(),
        "--secret",
        "FROM_FLAG=trailing-flag-secret-7373\n",
    ]);
    outcome.expect_code(0);
    assert_nowhere(&project, &outcome, "trailing-file-secret-4242");
    assert_nowhere(&project, &outcome, "trailing-flag-secret-7373");
    assert!(outcome.showed("file: ***"));
    assert!(outcome.showed("flag: ***"));
}

#[test]
fn add_mask_hides_a_value_made_at_run_time_in_this_and_later_steps() {
    let project = Project::new(
        r#"
on: push
jobs:
  mask:
    outputs:
      token: ${{ steps.make.outputs.token }}
    steps:
      - id: make
        run: |
          value="generated-$(date +%N)-token"
          echo "$value" > "$SCRATCH/value"
          echo "::add-mask::$value"
          echo "made $value"
          echo "token=$value" >> "$GITHUB_OUTPUT"
      - run: echo "later $(cat "$SCRATCH/value")"
"#,
    );
    let outcome = project.run(&[]);
    outcome.expect_code(0);
    let value = project.read_scratch("value").trim().to_string();
    assert!(value.starts_with("generated-"), "{value}");
    assert_nowhere(&project, &outcome, &value);
    assert!(outcome.showed("::add-mask::***"));
    assert!(outcome.showed("made ***"));
    assert!(outcome.showed("later ***"));
}

#[test]
fn a_secret_shorter_than_4_characters_is_refused() {
    let project = Project::new(
        r#"
on: push
jobs:
  one:
    steps:
      - run: touch "$SCRATCH/ran"
"#,
    );
    let outcome = project.run(&["--secret", "PIN=123"]);
    outcome.expect_code(2);
    assert!(
        outcome
            .stderr
            .contains("the secret `PIN` is 3 characters long; secrets must have at least 4"),
        "stderr: {}",
        outcome.stderr
    );
    assert!(!project.scratch_file("ran").exists());
    assert!(!project.data.join("runs").exists());
}

#[test]
fn a_secret_in_a_job_name_is_masked() {
    let secret = "job-name-secret-3141";
    let project = Project::new(
        r#"
on: push
jobs:
  deploy:
    name: deploy with ${{ secrets.TOKEN }}
    steps:
      - run: echo deploying
"#,
    );
    let outcome = project.run(&["--secret", &format!("TOKEN={secret}")]);
    outcome.expect_code(0);
    assert_nowhere(&project, &outcome, secret);
}

#[test]
fn a_secret_in_a_step_failure_reason_is_masked() {
    let secret = "reason-secret-2718";
    let project = Project::new(
        r#"
on: push
jobs:
  wd:
    steps:
      - working-directory: ${{ secrets.TOKEN }}
        run: echo never
  ref:
    steps:
      - uses: actions/checkout@v4
        with:
          ref: ${{ secrets.TOKEN }}
"#,
    );
    let outcome = project.run(&["--secret", &format!("TOKEN={secret}")]);
    outcome.expect_code(1);
    assert_nowhere(&project, &outcome, secret);
}

#[test]
fn a_secret_at_the_long_line_split_is_still_masked() {
    let secret = "QWERTYUIOPASDFGHJKLZ";
    let project = Project::new(
        r#"
on: push
jobs:
  long:
    steps:
      - env:
          TOKEN: ${{ secrets.TOKEN }}
        run: python3 -c "import os; print('x' * (64 * 1024 - 6) + os.environ['TOKEN'])"
"#,
    );
    let outcome = project.run(&["--secret", &format!("TOKEN={secret}")]);
    outcome.expect_code(0);
    // Lines longer than 64 KiB are stored in pieces; the secret must not survive in them,
    // whole or in readable parts.
    let logs = project.all_logs();
    for window in secret.as_bytes().windows(6) {
        let part = std::str::from_utf8(window).unwrap();
        assert!(
            !outcome.stdout.contains(part),
            "`{part}` of the secret in stdout"
        );
        for (path, text) in &logs {
            assert!(
                !text.contains(part),
                "`{part}` of the secret in {}",
                path.display()
            );
        }
    }
}

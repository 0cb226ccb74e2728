//! Helpers shared by the tests: release files in a temporary folder, a small Python HTTP
//! service, free ports, an HTTP client.

#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

pub mod sshd;

use std::path::{Path, PathBuf};
use std::time::Duration;

use sorat_deploy::{
    Environment, HealthCheck, Probe, ReleaseFile, ReleaseMeta, ReleaseSpec, RestartPolicy,
    ServiceConfig, digest_file,
};

/// The service the deploy tests run: `/healthz` answers 200 (or 500 when MODE says `500`,
/// and from 3 s after the start when it says `degrade`),
/// `/version` answers the content of VERSION, `/` answers 200 (500 when MODE says `errors`)
/// and counts its answers by code in `/metrics`; MODE `exit` exits at once with code 3.
/// SIGTERM is handled: it prints a line and exits 0.
pub const SERVER_PY: &str = r#"
import http.server, os, signal, sys, time
STARTED = time.time()
VERSION = open("VERSION").read().strip()
MODE = open("MODE").read().strip()
if MODE == "exit":
    print("broken release: exiting at once", flush=True)
    sys.exit(3)
def on_term(signum, frame):
    print("got SIGTERM, stopping", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
COUNTS = {"200": 0, "500": 0}
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/healthz":
            degraded = MODE == "degrade" and time.time() - STARTED > 3
            code, body = (500, b"broken") if MODE == "500" or degraded else (200, b"ok")
        elif self.path == "/version":
            code, body = 200, VERSION.encode()
        elif self.path == "/env":
            code, body = 200, os.environ.get("GREETING", "").encode()
        elif self.path == "/":
            code, body = (500, b"error") if MODE == "errors" else (200, b"hello")
            COUNTS[str(code)] += 1
        elif self.path == "/metrics":
            code = 200
            body = "".join('http_requests_total{code="%s"} %d\n' % item for item in COUNTS.items()).encode()
        else:
            code, body = 404, b"not found"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, format, *args):
        sys.stderr.write("request %s\n" % (format % args))
        sys.stderr.flush()
server = http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
print("listening on %s release %s version %s" % (os.environ["PORT"], os.environ["SORAT_RELEASE"], VERSION), flush=True)
server.serve_forever()
"#;

/// A channel for services' lines and the list they are collected into (in a task on the
/// current runtime).
pub fn collect_lines() -> (
    tokio::sync::mpsc::Sender<sorat_deploy::ServiceLine>,
    std::sync::Arc<std::sync::Mutex<Vec<sorat_deploy::ServiceLine>>>,
) {
    let (sender, mut receiver) = tokio::sync::mpsc::channel(1024);
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let collected = std::sync::Arc::clone(&lines);
    tokio::spawn(async move {
        while let Some(line) = receiver.recv().await {
            collected.lock().unwrap().push(line);
        }
    });
    (sender, lines)
}

/// A port free at the time of the call.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes `files` (name, content, mode) into a new folder under `base` and returns them as
/// release files with their true digests.
pub fn release_files(base: &Path, label: &str, files: &[(&str, &str, u32)]) -> Vec<ReleaseFile> {
    let folder = base.join(format!("src-{label}"));
    std::fs::create_dir_all(&folder).unwrap();
    files
        .iter()
        .map(|(name, content, mode)| {
            let source = folder.join(name.replace('/', "_"));
            std::fs::write(&source, content).unwrap();
            ReleaseFile {
                path: PathBuf::from(name),
                digest: digest_file(&source).unwrap(),
                source,
                mode: *mode,
            }
        })
        .collect()
}

/// Release metadata for `version`.
pub fn meta(version: &str) -> ReleaseMeta {
    ReleaseMeta {
        artifact: format!("web@{version}"),
        digest: format!("sha256:{}", "ab".repeat(32)),
        who: "tester".to_owned(),
        config: None,
    }
}

/// The Python service's release `number` at `version`, `mode` being ok, 500 or exit.
pub fn service_release(base: &Path, number: u32, version: &str, mode: &str) -> ReleaseSpec {
    ReleaseSpec {
        number,
        meta: meta(version),
        files: release_files(
            base,
            &format!("{number}"),
            &[
                ("server.py", SERVER_PY, 0o644),
                ("VERSION", version, 0o644),
                ("MODE", mode, 0o644),
            ],
        ),
    }
}

/// An environment running the Python service, checked on `/healthz`.
pub fn environment(health_timeout: Duration) -> Environment {
    Environment {
        name: "staging".to_owned(),
        service: ServiceConfig {
            command: "exec python3 server.py".to_owned(),
            working_dir: None,
            env: vec![("PYTHONUNBUFFERED".to_owned(), "1".to_owned())],
            restart: RestartPolicy::default(),
            stop_grace: Duration::from_secs(3),
        },
        health: HealthCheck {
            probe: Probe::Http {
                path: "/healthz".to_owned(),
                expected_status: 200,
            },
            interval: Duration::from_millis(100),
            attempt_timeout: Duration::from_secs(1),
            timeout: health_timeout,
            success_threshold: 2,
            failure_threshold: 3,
        },
        keep_releases: 5,
        bake: None,
        judge: None,
        secrets: None,
        progress: None,
    }
}

/// `GET http://127.0.0.1:<port><path>`: the status and body, or the error's text.
pub async fn get(port: u16, path: &str) -> Result<(u16, String), String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let response = client
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .map_err(|error| error.to_string())?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|error| error.to_string())?;
    Ok((status, body))
}

/// Waits until `GET /version` answers, up to `limit`.
pub async fn wait_version(port: u16, limit: Duration) -> Result<String, String> {
    let started = std::time::Instant::now();
    loop {
        match get(port, "/version").await {
            Ok((200, body)) => return Ok(body),
            other => {
                if started.elapsed() > limit {
                    return Err(format!("{other:?}"));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

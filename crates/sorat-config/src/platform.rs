//! `sorat.yaml`: the platform's configuration. This module reads the sections the server
//! knows today (`server`, `projects`); later capabilities add theirs. Unknown top-level
//! sections that a later issue owns are accepted with a warning, so a file written for a
//! newer Sorat still starts the parts this one has.
//!
//! Secrets never appear as values: a field that holds one takes a reference,
//! `${{ secrets.NAME }}`, resolved by the server from its encrypted secret store.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::reader::{MapReader, expect_text, expect_text_list};
use crate::yaml::{self, Node};
use crate::{Diagnostic, Diagnostics, SourceFile, Span, duration};

/// The whole file.
#[derive(Clone, Debug, PartialEq)]
pub struct PlatformConfig {
    /// `server:`.
    pub server: ServerConfig,
    /// `projects:`.
    pub projects: Vec<ProjectConfig>,
    /// `environments:`, in the order written.
    pub environments: Vec<EnvironmentConfig>,
}

/// One entry of `environments:` — where and how an artifact runs.
#[derive(Clone, Debug, PartialEq)]
pub struct EnvironmentConfig {
    /// Its name (the key).
    pub name: String,
    /// Where the name was written.
    pub span: Span,
    /// `targets`: the hosts (`local` folders on this machine or `ssh` hosts), each with the
    /// port its service listens on.
    pub hosts: Vec<TargetConfig>,
    /// `service.command`: run with `sh -c` in the release folder, `PORT` set.
    pub command: String,
    /// `service.env`.
    pub env: Vec<(String, String)>,
    /// `service.working_dir`: the folder inside the release the command runs in.
    pub working_dir: Option<String>,
    /// `service.stop_grace`: SIGTERM, then SIGKILL after this long (default 10s).
    pub stop_grace: Duration,
    /// `health`.
    pub health: HealthConfig,
    /// `strategy` (default rolling, batch 1).
    pub strategy: StrategyConfig,
    /// `analyses`: named analyses (Prometheus queries and their conditions) that canary steps
    /// and the bake window refer to.
    pub analyses: Vec<AnalysisConfig>,
    /// `bake`: the window after a deploy during which health and an analysis are watched.
    pub bake: Option<BakeConfig>,
    /// `keep_releases` per host (default 5).
    pub keep_releases: usize,
    /// `requires`: environments the same artifact must be deployed to (and current on every
    /// host) first.
    pub requires: Vec<String>,
    /// `approval`: the role (`viewer`, `developer`, `admin`) that must approve a deployment
    /// job before it starts (`sorat approve RUN JOB`).
    pub approval: Option<String>,
    /// `branches`: the branches (glob patterns, `release/*`) whose runs may deploy here;
    /// empty: any.
    pub branches: Vec<String>,
}

/// `environments.<name>.strategy`.
#[derive(Clone, Debug, PartialEq)]
pub enum StrategyConfig {
    /// `all-at-once`.
    AllAtOnce,
    /// `{ rolling: { batch: N } }` or `{ rolling: { max_unavailable: N | "P%" } }` (a share
    /// of the targets, rounded up, at least one).
    Rolling {
        /// Hosts per batch: how many are switched, so unavailable, at once.
        batch: usize,
    },
    /// `{ canary: { steps: [...] } }`.
    Canary {
        /// The steps.
        steps: Vec<CanaryStepConfig>,
    },
    /// `blue-green` or `{ blue_green: { pre_promotion, auto_promote, scale_down_delay,
    /// listen } }`: every (local) target has two `slots`; the release starts in the idle one,
    /// and Sorat's router on the target's `port` switches to it when it is healthy.
    BlueGreen {
        /// `pre_promotion`: an analysis measured before the switch.
        pre_promotion: Option<String>,
        /// `auto_promote` (default true): switch without waiting for `sorat promote`.
        auto_promote: bool,
        /// `scale_down_delay` (default 30s): how long the release that served keeps running.
        scale_down_delay: Duration,
        /// `listen` (default 127.0.0.1): the address the router listens on.
        listen: std::net::IpAddr,
    },
}

/// One step of `strategy.canary.steps`.
#[derive(Clone, Debug, PartialEq)]
pub enum CanaryStepConfig {
    /// `hosts: N`.
    Hosts(usize),
    /// `percent: P`.
    Percent(u32),
    /// `pause: 30s`.
    Pause(Duration),
    /// `analysis: NAME` (one of the environment's `analyses`).
    Analysis(String),
}

/// `environments.<name>.analyses.<analysis>`.
#[derive(Clone, Debug, PartialEq)]
pub struct AnalysisConfig {
    /// Its name (the key).
    pub name: String,
    /// `prometheus`: the base URL of a Prometheus-compatible query API.
    pub prometheus: String,
    /// `metrics`.
    pub metrics: Vec<MetricConfig>,
}

/// One of an analysis' `metrics`, as Argo Rollouts' analysis templates have them.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricConfig {
    /// `name`.
    pub name: String,
    /// `query`: PromQL (checked when read).
    pub query: String,
    /// `interval` (default 1m).
    pub interval: Duration,
    /// `count` (default 1).
    pub count: u32,
    /// `initial_delay` (default 0).
    pub initial_delay: Duration,
    /// `success_condition`: an expression over `result` (checked when read).
    pub success_condition: Option<String>,
    /// `failure_condition`.
    pub failure_condition: Option<String>,
    /// `failure_limit` (default 0).
    pub failure_limit: u32,
    /// `inconclusive_limit` (default 0).
    pub inconclusive_limit: u32,
    /// `consecutive_error_limit` (default 4).
    pub consecutive_error_limit: u32,
}

/// `environments.<name>.bake`.
#[derive(Clone, Debug, PartialEq)]
pub struct BakeConfig {
    /// `duration`.
    pub duration: Duration,
    /// `analysis`: the analysis watched meanwhile.
    pub analysis: Option<String>,
}

/// One entry of `targets`.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetConfig {
    /// `name` (default `<environment>-<n>`).
    pub name: Option<String>,
    /// `port`: the port the service listens on there.
    pub port: u16,
    /// Where the host is.
    pub place: TargetPlace,
}

/// Where a target is.
#[derive(Clone, Debug, PartialEq)]
pub enum TargetPlace {
    /// `local: { dir, port }`: a folder on this machine standing for a host (`dir` relative
    /// to the config file).
    Local {
        /// The folder.
        dir: PathBuf,
        /// `slots: [PORT, PORT]`: the ports the releases take turns on under `blue-green`
        /// (Sorat's router then serves `port`).
        slots: Option<[u16; 2]>,
    },
    /// `ssh: { host, user, ssh_port, key, known_hosts, dir, port }`.
    Ssh(SshConfig),
    /// `agent: { labels, dir, port }`: the host of the one online agent with these labels,
    /// which keeps the releases in `dir` there and supervises the service.
    Agent {
        /// The labels that pick the agent.
        labels: Vec<String>,
        /// The folder on that host.
        dir: String,
        /// `slots: [PORT, PORT]`: as for `local`, under `blue-green` (the agent runs the
        /// router).
        slots: Option<[u16; 2]>,
    },
}

/// A host reached over SSH.
#[derive(Clone, Debug, PartialEq)]
pub struct SshConfig {
    /// `host`: its address (a name or an IP address).
    pub host: String,
    /// `user` (default: the SSH configuration's, then the local user).
    pub user: Option<String>,
    /// `ssh_port` (default 22).
    pub ssh_port: u16,
    /// `key`: the private key file (relative to the config file).
    pub key: Option<PathBuf>,
    /// `known_hosts`: the file that must hold the host's key (relative to the config file;
    /// default `~/.ssh/known_hosts`). Host keys are always checked.
    pub known_hosts: Option<PathBuf>,
    /// `dir`: the folder on the host (relative paths from the user's home).
    pub dir: String,
    /// `slots: [PORT, PORT]`: as for `local`, under `blue-green` (Sorat uploads its own
    /// executable to the host and runs it there as the router).
    pub slots: Option<[u16; 2]>,
    /// `router`: the executable uploaded as the blue-green router instead of Sorat's own, for
    /// a host of another system or architecture (relative to the config file; needs `slots`).
    pub router: Option<PathBuf>,
}

/// `environments.<name>.health`.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthConfig {
    /// What is checked.
    pub check: HealthCheckKind,
    /// `interval` (default 500ms).
    pub interval: Duration,
    /// `timeout` in all (default 30s).
    pub timeout: Duration,
    /// `success_threshold` (default 1).
    pub success_threshold: u32,
    /// `failure_threshold` (default 3): failed attempts in a row that fail a host in the
    /// bake window.
    pub failure_threshold: u32,
}

/// The kind of a health check.
#[derive(Clone, Debug, PartialEq)]
pub enum HealthCheckKind {
    /// `http: { path, expect }` (expect default 200).
    Http {
        /// The path.
        path: String,
        /// The expected status.
        expect: u16,
    },
    /// `tcp: true`.
    Tcp,
    /// `command: ...`.
    Command(String),
}

/// `server:` — how `sorat up` runs.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    /// `listen`: the address of the HTTP API (default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// `data`: the data folder, relative to the config file (default `./.sorat`).
    pub data: PathBuf,
    /// `database`: `sqlite` (in the data folder) or a `postgres://` URL.
    pub database: String,
    /// `external_url`: how users and forges reach the server (default from `listen`).
    pub external_url: String,
    /// `time_zone`: the IANA zone cron schedules are read in (default `UTC`).
    pub time_zone: String,
    /// `public_metrics`: whether `/metrics` is served without a token (default true).
    pub public_metrics: bool,
    /// `queue_timeout`: a job that no agent can take fails after this long (default 10m).
    pub queue_timeout: Duration,
    /// `lease`: how long an agent's claim on a job lasts without a heartbeat (default 30s).
    pub lease: Duration,
    /// `lost_agent_retries`: how many times a job whose agent vanished is queued again
    /// before it fails (default 1).
    pub lost_agent_retries: u32,
    /// `shutdown_grace`: on SIGTERM, how long running steps may go on before they are killed
    /// (default 30s).
    pub shutdown_grace: Duration,
    /// `max_body`: the largest request body accepted, in bytes (default 25 MiB, GitHub's).
    pub max_body: usize,
    /// `local_agent`: the agent inside `sorat up`.
    pub local_agent: LocalAgentConfig,
    /// `tls`: serve HTTPS with this certificate chain and key (PEM files).
    pub tls: Option<TlsConfig>,
    /// `artifacts`: where the artifact repository keeps blobs and manifests: a folder
    /// (default `<data>/artifacts`) or an S3-compatible URL (`s3://bucket/prefix`).
    pub artifacts: Option<String>,
}

/// `server.tls`.
#[derive(Clone, Debug, PartialEq)]
pub struct TlsConfig {
    /// `cert`: the certificate chain (PEM), relative to the config file.
    pub cert: PathBuf,
    /// `key`: the private key (PEM), relative to the config file.
    pub key: PathBuf,
}

/// `server.local_agent`.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalAgentConfig {
    /// `enabled` (default true).
    pub enabled: bool,
    /// `capacity`: jobs at once (default: the number of cores, at least 2).
    pub capacity: usize,
    /// `labels`: the labels it matches; empty means it takes any job (as `sorat run` does).
    pub labels: Vec<String>,
}

/// One entry of `projects:`.
#[derive(Clone, Debug, PartialEq)]
pub struct ProjectConfig {
    /// `name`: letters, digits, `-`, `_`, `.`; unique.
    pub name: String,
    /// Where `name` was written.
    pub span: Span,
    /// `repo`: a `file://`, `https://`, `http://`, `ssh://` or `git@` URL, or a path (relative
    /// to the config file) to a local repository.
    pub repo: String,
    /// `dir`: the project's folder inside the repository (default: the top).
    pub dir: String,
    /// `pipeline`: the pipeline file, relative to `dir` (default `.sorat/pipeline.yaml`).
    pub pipeline: String,
    /// `branch`: the default branch, run by manual triggers without a ref (default `main`).
    pub branch: String,
    /// `webhook.secret`: the secret forges sign webhooks with, as a secret reference.
    pub webhook_secret: Option<SecretRef>,
    /// `poll`: how often to look for new commits; `None`: never.
    pub poll: Option<Duration>,
    /// `status`: commit statuses back to the forge.
    pub status: Option<StatusConfig>,
}

/// `projects[].status`: report run states as GitHub commit statuses.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusConfig {
    /// `api`: the API's base URL (default `https://api.github.com`).
    pub api: String,
    /// `repository`: `owner/name`.
    pub repository: String,
    /// `token`: a secret reference to the forge token.
    pub token: SecretRef,
}

/// A `${{ secrets.NAME }}` reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRef {
    /// The secret's name.
    pub name: String,
}

/// Reads a whole `sorat.yaml`. Parsing never fails: the config, when usable, and every
/// diagnostic. Relative paths are resolved against the file's folder.
pub fn load(file: &SourceFile) -> (Option<PlatformConfig>, Diagnostics) {
    let (root, mut diagnostics) = yaml::parse(file);
    let Some(root) = root else {
        return (None, diagnostics);
    };
    // Absolute, so that paths stay right whatever folder a git command later runs in.
    let parent = file
        .path()
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let base = std::path::absolute(&parent).unwrap_or(parent);
    let config = Loader {
        file,
        base: &base,
        diagnostics: &mut diagnostics,
    }
    .platform(&root);
    if diagnostics.has_errors() {
        return (None, diagnostics);
    }
    (config, diagnostics)
}

/// The configuration `sorat up` uses without a file: every default, no projects.
pub fn default_config(base: &Path) -> PlatformConfig {
    let file = SourceFile::new(base.join("sorat.yaml"), "{}\n");
    let (config, _) = load(&file);
    config.unwrap_or_else(unreachable_default)
}

fn unreachable_default() -> PlatformConfig {
    // `{}` always loads; this keeps `default_config` free of a panic path all the same.
    PlatformConfig {
        server: ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data: PathBuf::from(".sorat"),
            database: "sqlite".into(),
            external_url: "http://127.0.0.1:8080".into(),
            time_zone: "UTC".into(),
            public_metrics: true,
            queue_timeout: Duration::from_secs(600),
            lease: Duration::from_secs(30),
            lost_agent_retries: 1,
            shutdown_grace: Duration::from_secs(30),
            max_body: 25 << 20,
            local_agent: LocalAgentConfig {
                enabled: true,
                capacity: 2,
                labels: Vec::new(),
            },
            tls: None,
            artifacts: None,
        },
        projects: Vec::new(),
        environments: Vec::new(),
    }
}

/// Sections later capabilities own: accepted (with a warning) so that one file serves a
/// newer and an older Sorat.
const LATER_SECTIONS: &[&str] = &[
    "monitoring",
    "alerting",
    "dashboards",
    "logs",
    "security",
    "oncall",
    "playbooks",
    "backup",
    "include",
];

struct Loader<'a> {
    file: &'a SourceFile,
    base: &'a Path,
    diagnostics: &'a mut Diagnostics,
}

impl Loader<'_> {
    fn error(&mut self, span: Span, message: impl Into<String>) -> &mut Diagnostic {
        self.diagnostics
            .add(Diagnostic::error(self.file, span, message))
    }

    fn platform(&mut self, root: &Node) -> Option<PlatformConfig> {
        let file = self.file;
        let mut reader = MapReader::new(file, root, "sorat.yaml", self.diagnostics)?;
        let server = reader.get("server");
        let projects = reader.get("projects");
        let environments = reader.get("environments");
        let mut later = Vec::new();
        for section in LATER_SECTIONS {
            if let Some((key, _)) = reader.get_entry(section) {
                later.push((*section, key.span));
            }
        }
        reader.finish(self.diagnostics);
        for (section, span) in later {
            self.diagnostics.push(Diagnostic::warning(
                file,
                span,
                format!("`{section}` is not read by this version of Sorat; it is ignored"),
            ));
        }
        let null = Node {
            span: Span::new(0, 0),
            value: yaml::Value::Scalar(yaml::Scalar {
                text: String::new(),
                kind: yaml::ScalarKind::Null,
                quoted: false,
            }),
        };
        let server = self.server(server.unwrap_or(&null));
        let projects = match projects {
            Some(node) => self.projects(node),
            None => Vec::new(),
        };
        let environments = match environments {
            Some(node) => self.environments(node),
            None => Vec::new(),
        };
        Some(PlatformConfig {
            server: server?,
            projects,
            environments,
        })
    }

    fn server(&mut self, node: &Node) -> Option<ServerConfig> {
        let file = self.file;
        let mut reader = MapReader::new(file, node, "`server`", self.diagnostics)?;
        let listen = match reader.get("listen") {
            Some(node) => {
                let text = expect_text(file, node, "`server.listen`", self.diagnostics)?;
                match text.parse::<SocketAddr>() {
                    Ok(address) => address,
                    Err(_) => {
                        self.error(
                            node.span,
                            format!(
                                "`server.listen` must be an address with a port, found `{text}`"
                            ),
                        )
                        .hint = Some("e.g. `127.0.0.1:8080` or `[::1]:8080`".into());
                        SocketAddr::from(([127, 0, 0, 1], 8080))
                    }
                }
            }
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };
        let data = match reader.get("data") {
            Some(node) => {
                self.base
                    .join(expect_text(file, node, "`server.data`", self.diagnostics)?)
            }
            None => self.base.join(".sorat"),
        };
        let database = match reader.get("database") {
            Some(node) => {
                let text = expect_text(file, node, "`server.database`", self.diagnostics)?;
                if text != "sqlite"
                    && !text.starts_with("sqlite:")
                    && !text.starts_with("postgres://")
                    && !text.starts_with("postgresql://")
                {
                    self.error(
                        node.span,
                        format!("`server.database` must be `sqlite` or a `postgres://` URL, found `{text}`"),
                    );
                    return None;
                }
                text.to_string()
            }
            None => "sqlite".into(),
        };
        let external_url = match reader.get("external_url") {
            Some(node) => {
                let text = expect_text(file, node, "`server.external_url`", self.diagnostics)?;
                if !(text.starts_with("http://") || text.starts_with("https://")) {
                    self.error(
                        node.span,
                        format!("`server.external_url` must start with http:// or https://, found `{text}`"),
                    );
                    return None;
                }
                text.trim_end_matches('/').to_string()
            }
            None => format!("http://{listen}"),
        };
        let time_zone = match reader.get("time_zone") {
            Some(node) => {
                let name = expect_text(file, node, "`server.time_zone`", self.diagnostics)?;
                if let Err(error) = jiff::tz::TimeZone::get(name) {
                    self.error(
                        node.span,
                        format!("`server.time_zone`: `{name}` is not a time zone this machine knows: {error}"),
                    )
                    .hint = Some("an IANA name such as `UTC`, `Europe/Berlin` or `America/New_York`".into());
                }
                name.to_string()
            }
            None => "UTC".into(),
        };
        let public_metrics = self.bool(
            reader.get("public_metrics"),
            "`server.public_metrics`",
            true,
        );
        let queue_timeout = self.at_least(
            reader.get("queue_timeout"),
            "`server.queue_timeout`",
            600,
            1,
        );
        let lease = self.at_least(reader.get("lease"), "`server.lease`", 30, 1);
        let shutdown_grace =
            self.duration(reader.get("shutdown_grace"), "`server.shutdown_grace`", 30);
        let lost_agent_retries = self.count(
            reader.get("lost_agent_retries"),
            "`server.lost_agent_retries`",
            1,
            0..=10,
        ) as u32;
        let max_body = self.count(
            reader.get("max_body"),
            "`server.max_body`",
            25 << 20,
            1024..=(1 << 30),
        ) as usize;
        let null = Node {
            span: node.span,
            value: yaml::Value::Scalar(yaml::Scalar {
                text: String::new(),
                kind: yaml::ScalarKind::Null,
                quoted: false,
            }),
        };
        let local_agent = self.local_agent(reader.get("local_agent").unwrap_or(&null));
        let tls = match reader.get("tls") {
            Some(node) => self.tls(node),
            None => None,
        };
        let artifacts = match reader.get("artifacts") {
            Some(node) => {
                let text = expect_text(file, node, "`server.artifacts`", self.diagnostics)?;
                if text.contains("://")
                    && !text.starts_with("s3://")
                    && !text.starts_with("memory://")
                {
                    self.error(
                        node.span,
                        format!("`server.artifacts` must be a folder or an `s3://bucket/prefix` URL, found `{text}`"),
                    );
                    None
                } else if text.contains("://") {
                    Some(text.to_string())
                } else {
                    Some(self.base.join(text).to_string_lossy().into_owned())
                }
            }
            None => None,
        };
        reader.finish(self.diagnostics);
        Some(ServerConfig {
            local_agent: local_agent?,
            listen,
            data,
            database,
            external_url,
            time_zone,
            public_metrics,
            queue_timeout,
            lease,
            lost_agent_retries,
            shutdown_grace,
            max_body,
            tls,
            artifacts,
        })
    }

    fn tls(&mut self, node: &Node) -> Option<TlsConfig> {
        let file = self.file;
        let mut reader = MapReader::new(file, node, "`server.tls`", self.diagnostics)?;
        let cert = reader.get("cert");
        let key = reader.get("key");
        reader.finish(self.diagnostics);
        let (Some(cert), Some(key)) = (cert, key) else {
            self.error(
                node.head_span(file),
                "`server.tls` needs both `cert` and `key` (PEM files)",
            );
            return None;
        };
        let cert = expect_text(file, cert, "`server.tls.cert`", self.diagnostics)?;
        let key = expect_text(file, key, "`server.tls.key`", self.diagnostics)?;
        Some(TlsConfig {
            cert: self.base.join(cert),
            key: self.base.join(key),
        })
    }

    fn local_agent(&mut self, node: &Node) -> Option<LocalAgentConfig> {
        let file = self.file;
        let mut reader = MapReader::new(file, node, "`server.local_agent`", self.diagnostics)?;
        let enabled = self.bool(reader.get("enabled"), "`server.local_agent.enabled`", true);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        let capacity = self.count(
            reader.get("capacity"),
            "`server.local_agent.capacity`",
            cores as i64,
            1..=1024,
        ) as usize;
        let labels = match reader.get("labels") {
            Some(node) => expect_text_list(file, node, "a label", self.diagnostics)
                .into_iter()
                .map(|(text, _)| text.to_string())
                .collect(),
            None => Vec::new(),
        };
        reader.finish(self.diagnostics);
        Some(LocalAgentConfig {
            enabled,
            capacity,
            labels,
        })
    }

    fn projects(&mut self, node: &Node) -> Vec<ProjectConfig> {
        let Some(items) = node.as_seq() else {
            if !node.is_null() {
                self.error(
                    node.head_span(self.file),
                    format!("`projects` must be a list, found {}", node.kind_name()),
                );
            }
            return Vec::new();
        };
        let mut projects: Vec<ProjectConfig> = Vec::new();
        for item in items {
            let Some(project) = self.project(item) else {
                continue;
            };
            if let Some(earlier) = projects.iter().find(|p| p.name == project.name) {
                let line = self.file.line_col(earlier.span.start).line;
                self.error(
                    project.span,
                    format!(
                        "project `{}` is already defined on line {line}",
                        project.name
                    ),
                );
                continue;
            }
            projects.push(project);
        }
        projects
    }

    fn environments(&mut self, node: &Node) -> Vec<EnvironmentConfig> {
        let file = self.file;
        let entries = crate::reader::named_entries(file, node, "`environments`", self.diagnostics);
        let mut out = Vec::new();
        let mut ports: Vec<(u16, Span)> = Vec::new();
        let names: Vec<String> = entries
            .iter()
            .map(|(name, _, _)| name.to_string())
            .collect();
        for (name, key, value) in entries {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            {
                self.error(
                    key.span,
                    format!("environment name `{name}` must be letters, digits, `-` or `_`"),
                );
                continue;
            }
            if let Some(environment) = self.environment(name, key.span, value, &mut ports, &names) {
                out.push(environment);
            }
        }
        out
    }

    fn port(&mut self, node: &Node, what: &str) -> Option<u16> {
        match node.as_i64() {
            Some(value) if (1..=65535).contains(&value) => Some(value as u16),
            _ => {
                self.error(node.span, format!("{what} must be from 1 to 65535"));
                None
            }
        }
    }

    fn target(&mut self, item: &Node, ports: &mut Vec<(u16, Span)>) -> Option<TargetConfig> {
        let file = self.file;
        let mut target = MapReader::new(file, item, "a target", self.diagnostics)?;
        let local = target.get("local");
        let ssh = target.get("ssh");
        let agent = target.get("agent");
        let name = target.get("name");
        target.finish(self.diagnostics);
        let name = match name {
            Some(node) => {
                let text = expect_text(file, node, "`name`", self.diagnostics)?.to_string();
                if text.is_empty()
                    || !text
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                {
                    self.error(
                        node.span,
                        format!("target name `{text}` must be letters, digits, `-`, `_` or `.`"),
                    );
                    return None;
                }
                Some(text)
            }
            None => None,
        };
        if let Some(agent) = agent {
            if local.is_some() || ssh.is_some() {
                self.error(
                    item.head_span(file),
                    "a target is one of `local`, `ssh` or `agent`",
                );
                return None;
            }
            let mut reader = MapReader::new(file, agent, "`agent`", self.diagnostics)?;
            let labels = reader.get("labels");
            let dir = reader.get("dir");
            let port = reader.get("port");
            let slots_node = reader.get("slots");
            reader.finish(self.diagnostics);
            let (Some(labels), Some(dir), Some(port)) = (labels, dir, port) else {
                self.error(
                    agent.head_span(file),
                    "`agent` needs `labels` (which agent), `dir` and `port` (the service's port)",
                );
                return None;
            };
            let labels: Vec<String> = expect_text_list(file, labels, "`labels`", self.diagnostics)
                .into_iter()
                .map(|(text, _)| text.to_string())
                .collect();
            if labels.is_empty() {
                self.error(
                    agent.head_span(file),
                    "`agent.labels` names at least one label",
                );
                return None;
            }
            let dir_text = expect_text(file, dir, "`dir`", self.diagnostics)?.to_string();
            if dir_text.is_empty() || dir_text.contains(['\n', '\r']) {
                self.error(dir.span, "`dir` must be a folder path on one line");
                return None;
            }
            let port_value = self.port(port, "`port`")?;
            // Ports of agent targets are on their own hosts: checked among themselves only.
            let slots = match slots_node {
                Some(node) => {
                    let mut own = vec![(port_value, port.span)];
                    Some(self.slots(node, &mut own)?)
                }
                None => None,
            };
            return Some(TargetConfig {
                name,
                port: port_value,
                place: TargetPlace::Agent {
                    labels,
                    dir: dir_text,
                    slots,
                },
            });
        }
        match (local, ssh) {
            (Some(local), None) => {
                let mut reader = MapReader::new(file, local, "`local`", self.diagnostics)?;
                let dir = reader.get("dir");
                let port = reader.get("port");
                let slots_node = reader.get("slots");
                reader.finish(self.diagnostics);
                let (Some(dir), Some(port)) = (dir, port) else {
                    self.error(local.head_span(file), "`local` needs `dir` and `port`");
                    return None;
                };
                let dir = expect_text(file, dir, "`dir`", self.diagnostics)?;
                let port_value = self.port(port, "`port`")?;
                // Local targets share this machine, so they cannot share a port.
                if let Some((_, earlier)) = ports.iter().find(|(p, _)| *p == port_value) {
                    let line = file.line_col(earlier.start).line;
                    self.error(
                        port.span,
                        format!("port {port_value} is already used by a target on line {line}"),
                    );
                    return None;
                }
                ports.push((port_value, port.span));
                let slots = match slots_node {
                    Some(node) => Some(self.slots(node, ports)?),
                    None => None,
                };
                Some(TargetConfig {
                    name,
                    port: port_value,
                    place: TargetPlace::Local {
                        dir: self.base.join(dir),
                        slots,
                    },
                })
            }
            (None, Some(ssh)) => {
                let mut reader = MapReader::new(file, ssh, "`ssh`", self.diagnostics)?;
                let host = reader.get("host");
                let user = reader.get("user");
                let ssh_port = reader.get("ssh_port");
                let key = reader.get("key");
                let known_hosts = reader.get("known_hosts");
                let dir = reader.get("dir");
                let port = reader.get("port");
                let slots_node = reader.get("slots");
                let router = reader.get("router");
                reader.finish(self.diagnostics);
                let (Some(host), Some(dir), Some(port)) = (host, dir, port) else {
                    self.error(
                        ssh.head_span(file),
                        "`ssh` needs `host`, `dir` and `port` (the service's port)",
                    );
                    return None;
                };
                let host = expect_text(file, host, "`host`", self.diagnostics)?.to_string();
                if host.is_empty() || host.starts_with('-') || host.contains(char::is_whitespace) {
                    self.error(
                        ssh.head_span(file),
                        format!("`host` `{host}` is not a host name or address"),
                    );
                    return None;
                }
                let dir_text = expect_text(file, dir, "`dir`", self.diagnostics)?.to_string();
                if dir_text.is_empty() || dir_text.contains(['\n', '\r']) {
                    self.error(dir.span, "`dir` must be a folder path on one line");
                    return None;
                }
                let port_value = self.port(port, "`port`")?;
                let ssh_port_value = match ssh_port {
                    Some(node) => self.port(node, "`ssh_port`")?,
                    None => 22,
                };
                let user = match user {
                    Some(node) => {
                        Some(expect_text(file, node, "`user`", self.diagnostics)?.to_string())
                    }
                    None => None,
                };
                let mut path = |node: Option<&Node>, what: &str| -> Option<Option<PathBuf>> {
                    match node {
                        Some(node) => {
                            let text = expect_text(file, node, what, self.diagnostics)?;
                            let home = std::env::var_os("HOME").map(PathBuf::from);
                            Some(Some(match (text.strip_prefix("~/"), home) {
                                (Some(rest), Some(home)) => home.join(rest),
                                _ => self.base.join(text),
                            }))
                        }
                        None => Some(None),
                    }
                };
                let key = path(key, "`key`")?;
                let known_hosts = path(known_hosts, "`known_hosts`")?;
                if let (Some(node), None) = (router, slots_node) {
                    self.error(
                        node.span,
                        "`router` is the executable of the blue-green router: it needs `slots: [PORT, PORT]`",
                    );
                    return None;
                }
                let router = path(router, "`router`")?;
                // Ports of SSH targets are on their own hosts: checked among themselves only.
                let slots = match slots_node {
                    Some(node) => {
                        let mut own = vec![(port_value, port.span)];
                        Some(self.slots(node, &mut own)?)
                    }
                    None => None,
                };
                Some(TargetConfig {
                    name,
                    port: port_value,
                    place: TargetPlace::Ssh(SshConfig {
                        host,
                        user,
                        ssh_port: ssh_port_value,
                        key,
                        known_hosts,
                        dir: dir_text,
                        slots,
                        router,
                    }),
                })
            }
            (Some(_), Some(_)) => {
                self.error(
                    item.head_span(file),
                    "a target is `local` or `ssh`, not both",
                );
                None
            }
            (None, None) => {
                self.error(
                    item.head_span(file),
                    "a target needs `local: { dir, port }`, `ssh: { host, dir, port }` or `agent: { labels, dir, port }`",
                );
                None
            }
        }
    }

    /// `slots: [PORT, PORT]`: two ports, used by no other target on this machine.
    fn slots(&mut self, node: &Node, ports: &mut Vec<(u16, Span)>) -> Option<[u16; 2]> {
        let items = match node.as_seq() {
            Some(items) if items.len() == 2 => items,
            _ => {
                self.error(
                    node.span,
                    "`slots` is two ports, `[8101, 8102]`: the releases take turns on them while Sorat's router serves `port`",
                );
                return None;
            }
        };
        let mut out = [0u16; 2];
        for (index, item) in items.iter().enumerate() {
            let value = self.port(item, "a slot's port")?;
            if let Some((_, earlier)) = ports.iter().find(|(p, _)| *p == value) {
                let line = self.file.line_col(earlier.start).line;
                self.error(
                    item.span,
                    format!("port {value} is already used by a target on line {line}"),
                );
                return None;
            }
            ports.push((value, item.span));
            out[index] = value;
        }
        Some(out)
    }

    fn environment(
        &mut self,
        name: &str,
        span: Span,
        node: &Node,
        ports: &mut Vec<(u16, Span)>,
        names: &[String],
    ) -> Option<EnvironmentConfig> {
        let file = self.file;
        let what = format!("environment `{name}`");
        let mut reader = MapReader::new(file, node, what.clone(), self.diagnostics)?;
        let targets = reader.get("targets");
        let service = reader.get("service");
        let health = reader.get("health");
        let strategy = reader.get("strategy");
        let keep = reader.get("keep_releases");
        let analyses_node = reader.get("analyses");
        let bake_node = reader.get("bake");
        let approval_node = reader.get("approval");
        let branches_node = reader.get("branches");
        let requires = reader.get("requires");
        reader.finish(self.diagnostics);
        let mut required = Vec::new();
        if let Some(node) = requires {
            for (text, text_node) in expect_text_list(file, node, "`requires`", self.diagnostics) {
                let text_span = text_node.span;
                if text == name {
                    self.error(
                        text_span,
                        format!("environment `{name}` cannot require itself"),
                    );
                } else if !names.iter().any(|known| known.as_str() == text) {
                    self.error(
                        text_span,
                        format!("`requires`: no environment `{text}` in `environments`"),
                    );
                } else {
                    required.push(text.to_string());
                }
            }
        }
        let requires = required;
        let mut hosts = Vec::new();
        let mut host_spans = Vec::new();
        match targets.and_then(Node::as_seq) {
            Some(items) if !items.is_empty() => {
                for item in items {
                    if let Some(target) = self.target(item, ports) {
                        host_spans.push(item.head_span(file));
                        if let Some(name) = &target.name
                            && hosts
                                .iter()
                                .any(|other: &TargetConfig| other.name.as_ref() == Some(name))
                        {
                            self.error(
                                item.head_span(file),
                                format!("two targets are named `{name}`"),
                            );
                            host_spans.pop();
                            continue;
                        }
                        hosts.push(target);
                    }
                }
            }
            _ => {
                self.error(
                    span,
                    format!(
                        "{what} needs `targets` (a list of `local: {{ dir, port }}` or `ssh: {{ host, dir, port }}`)"
                    ),
                );
                return None;
            }
        }
        let Some(service) = service else {
            self.error(span, format!("{what} needs a `service` with a `command`"));
            return None;
        };
        let mut service_reader = MapReader::new(file, service, "`service`", self.diagnostics)?;
        let command = service_reader.get("command");
        let env = service_reader.get("env");
        let stop_grace = service_reader.get("stop_grace");
        let working_dir_node = service_reader.get("working_dir");
        service_reader.finish(self.diagnostics);
        let Some(command) = command else {
            self.error(service.head_span(file), "`service` needs a `command`");
            return None;
        };
        let command =
            expect_text(file, command, "`service.command`", self.diagnostics)?.to_string();
        let mut env_pairs = Vec::new();
        if let Some(env) = env {
            for (key, key_node, value) in
                crate::reader::named_entries(file, env, "`service.env`", self.diagnostics)
            {
                let key = key.to_string();
                let is_name = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !is_name || key == "PORT" || key.starts_with("SORAT_") {
                    self.error(
                        key_node.span,
                        format!("`service.env` key `{key}` must be a variable name (letters, digits and `_`, not starting with a digit) other than `PORT` and `SORAT_*`, which Sorat sets"),
                    );
                    continue;
                }
                let Some(text) = expect_text(file, value, "an env value", self.diagnostics) else {
                    continue;
                };
                if text.contains("${{") && parse_secret_ref(text).is_none() {
                    self.error(
                        value.span,
                        format!("`service.env.{key}` is plain text or a whole secret reference such as `${{{{ secrets.DB_PASSWORD }}}}`, not `{text}`"),
                    );
                    continue;
                }
                env_pairs.push((key, text.to_string()));
            }
        }
        let stop_grace = self.duration(stop_grace, "`service.stop_grace`", 10);
        let working_dir = match working_dir_node {
            Some(node) => {
                let text =
                    expect_text(file, node, "`service.working_dir`", self.diagnostics)?.to_string();
                let inside = !text.is_empty()
                    && !text.contains(['\n', '\r', '\0'])
                    && std::path::Path::new(&text)
                        .components()
                        .all(|part| matches!(part, std::path::Component::Normal(_)));
                if !inside {
                    self.error(
                        node.span,
                        format!("`service.working_dir` is a folder inside the release, a relative path without `.` or `..` (`app/bin`), not `{text}`"),
                    );
                    return None;
                }
                Some(text.trim_end_matches('/').to_owned())
            }
            None => None,
        };
        let health = match health {
            Some(node) => self.health(node)?,
            None => HealthConfig {
                check: HealthCheckKind::Tcp,
                interval: Duration::from_millis(500),
                timeout: Duration::from_secs(30),
                success_threshold: 1,
                failure_threshold: 3,
            },
        };
        let analyses = match analyses_node {
            Some(node) => self.analyses(node),
            None => Vec::new(),
        };
        let known = |name: &str| analyses.iter().any(|analysis| analysis.name == name);
        let strategy = match strategy {
            None => StrategyConfig::Rolling { batch: 1 },
            Some(node) if node.as_str() == Some("all-at-once") => StrategyConfig::AllAtOnce,
            Some(node) if node.as_str() == Some("blue-green") => {
                self.blue_green(None, &hosts, &host_spans, &known)?
            }
            Some(node) => {
                let mut strategy_reader =
                    MapReader::new(file, node, "`strategy`", self.diagnostics)?;
                let rolling = strategy_reader.get("rolling");
                let canary = strategy_reader.get("canary");
                let blue_green = strategy_reader.get("blue_green");
                strategy_reader.finish(self.diagnostics);
                match (rolling, canary, blue_green) {
                    (None, None, Some(blue_green)) => {
                        self.blue_green(Some(blue_green), &hosts, &host_spans, &known)?
                    }
                    (Some(rolling), None, None) => {
                        let mut rolling_reader =
                            MapReader::new(file, rolling, "`rolling`", self.diagnostics)?;
                        let batch = rolling_reader.get("batch");
                        let max_unavailable = rolling_reader.get("max_unavailable");
                        rolling_reader.finish(self.diagnostics);
                        let batch = match (batch, max_unavailable) {
                            (Some(_), Some(other)) => {
                                self.error(
                                    other.span,
                                    "`rolling` takes `batch` or `max_unavailable`, not both (they mean the same: hosts switched at once)",
                                );
                                return None;
                            }
                            (None, Some(node)) => {
                                match node.as_str().and_then(|text| text.strip_suffix('%')) {
                                    Some(percent) => match percent.trim().parse::<usize>() {
                                        Ok(percent) if (1..=100).contains(&percent) => {
                                            (hosts.len() * percent).div_ceil(100).max(1)
                                        }
                                        _ => {
                                            self.error(
                                            node.span,
                                            "`rolling.max_unavailable` is a number of hosts or a percentage from 1% to 100%",
                                        );
                                            return None;
                                        }
                                    },
                                    None => self.count(
                                        Some(node),
                                        "`rolling.max_unavailable`",
                                        1,
                                        1..=10_000,
                                    ) as usize,
                                }
                            }
                            (batch, None) => {
                                self.count(batch, "`rolling.batch`", 1, 1..=10_000) as usize
                            }
                        };
                        StrategyConfig::Rolling { batch }
                    }
                    (None, Some(canary), None) => {
                        let steps = self.canary_steps(canary, &known)?;
                        StrategyConfig::Canary { steps }
                    }
                    _ => {
                        self.error(
                            node.head_span(file),
                            "`strategy` is `all-at-once`, `blue-green`, `{ rolling: { batch: N } }`, `{ canary: { steps: [...] } }` or `{ blue_green: { ... } }`",
                        );
                        return None;
                    }
                }
            }
        };
        let bake = match bake_node {
            Some(node) => {
                let mut bake_reader = MapReader::new(file, node, "`bake`", self.diagnostics)?;
                let duration_node = bake_reader.get("duration");
                let analysis = bake_reader.get("analysis");
                bake_reader.finish(self.diagnostics);
                if duration_node.is_none() {
                    self.error(node.head_span(file), "`bake` needs a `duration`");
                    return None;
                }
                let duration = self.duration(duration_node, "`bake.duration`", 0);
                let analysis = match analysis {
                    Some(analysis_node) => {
                        let text =
                            expect_text(file, analysis_node, "`bake.analysis`", self.diagnostics)?
                                .to_string();
                        if !known(&text) {
                            self.error(
                                analysis_node.span,
                                format!("no analysis `{text}` in this environment's `analyses`"),
                            );
                        }
                        Some(text)
                    }
                    None => None,
                };
                Some(BakeConfig { duration, analysis })
            }
            None => None,
        };
        let approval = match approval_node {
            Some(node) => {
                let role = match node.as_map() {
                    Some(_) => {
                        let mut approval_reader =
                            MapReader::new(file, node, "`approval`", self.diagnostics)?;
                        let role = approval_reader.get("role");
                        approval_reader.finish(self.diagnostics);
                        match role {
                            Some(role) => {
                                expect_text(file, role, "`approval.role`", self.diagnostics)?
                            }
                            None => "admin",
                        }
                    }
                    None => expect_text(file, node, "`approval`", self.diagnostics)?,
                };
                if !matches!(role, "viewer" | "developer" | "admin") {
                    self.error(
                        node.span,
                        format!(
                            "`approval` is a role: `viewer`, `developer` or `admin`, not `{role}`"
                        ),
                    );
                    return None;
                }
                Some(role.to_string())
            }
            None => None,
        };
        let mut branches = Vec::new();
        if let Some(node) = branches_node {
            for (text, text_node) in expect_text_list(file, node, "`branches`", self.diagnostics) {
                let text_span = text_node.span;
                match globset::Glob::new(text) {
                    Ok(_) if !text.is_empty() => branches.push(text.to_string()),
                    Ok(_) => {
                        self.error(text_span, "`branches`: an empty pattern matches nothing");
                    }
                    Err(error) => {
                        self.error(
                            text_span,
                            format!(
                                "`branches`: `{text}` is not a valid pattern: {}",
                                error.kind()
                            ),
                        );
                    }
                }
            }
        }
        let keep_releases = self.count(keep, "`keep_releases`", 5, 2..=1000) as usize;
        Some(EnvironmentConfig {
            name: name.to_string(),
            span,
            hosts,
            command,
            env: env_pairs,
            working_dir,
            stop_grace,
            health,
            strategy,
            analyses,
            bake,
            keep_releases,
            requires,
            approval,
            branches,
        })
    }

    /// `blue-green` / `{ blue_green: { pre_promotion, auto_promote, scale_down_delay,
    /// listen } }`; every target must be local with `slots`.
    fn blue_green(
        &mut self,
        node: Option<&Node>,
        hosts: &[TargetConfig],
        host_spans: &[Span],
        known: &dyn Fn(&str) -> bool,
    ) -> Option<StrategyConfig> {
        let file = self.file;
        let (mut pre_promotion, mut auto_promote, mut scale_down_delay, mut listen) = (
            None,
            true,
            Duration::from_secs(30),
            std::net::IpAddr::from([127, 0, 0, 1]),
        );
        if let Some(node) = node {
            let mut reader = MapReader::new(file, node, "`blue_green`", self.diagnostics)?;
            let pre = reader.get("pre_promotion");
            let auto = reader.get("auto_promote");
            let delay = reader.get("scale_down_delay");
            let listen_node = reader.get("listen");
            reader.finish(self.diagnostics);
            if let Some(pre) = pre {
                let text = expect_text(file, pre, "`blue_green.pre_promotion`", self.diagnostics)?
                    .to_string();
                if !known(&text) {
                    self.error(
                        pre.span,
                        format!("no analysis `{text}` in this environment's `analyses`"),
                    );
                    return None;
                }
                pre_promotion = Some(text);
            }
            if let Some(auto) = auto {
                match auto.as_bool() {
                    Some(value) => auto_promote = value,
                    None => {
                        self.error(auto.span, "`blue_green.auto_promote` is true or false");
                        return None;
                    }
                }
            }
            scale_down_delay = self.duration(delay, "`blue_green.scale_down_delay`", 30);
            if let Some(listen_node) = listen_node {
                let text = expect_text(file, listen_node, "`blue_green.listen`", self.diagnostics)?;
                match text.parse() {
                    Ok(address) => listen = address,
                    Err(_) => {
                        self.error(
                            listen_node.span,
                            format!("`blue_green.listen` is an IP address (`127.0.0.1`, `0.0.0.0`, `::1`), not `{text}`"),
                        );
                        return None;
                    }
                }
            }
        }
        let mut fine = true;
        for (host, span) in hosts.iter().zip(host_spans) {
            match &host.place {
                TargetPlace::Local { slots: Some(_), .. }
                | TargetPlace::Agent { slots: Some(_), .. }
                | TargetPlace::Ssh(SshConfig { slots: Some(_), .. }) => {}
                TargetPlace::Local { slots: None, .. }
                | TargetPlace::Agent { slots: None, .. }
                | TargetPlace::Ssh(SshConfig { slots: None, .. }) => {
                    self.error(
                        *span,
                        "blue-green needs `slots: [PORT, PORT]` on this target: the two ports its releases take turns on while Sorat's router serves `port`",
                    );
                    fine = false;
                }
            }
        }
        fine.then_some(StrategyConfig::BlueGreen {
            pre_promotion,
            auto_promote,
            scale_down_delay,
            listen,
        })
    }

    fn canary_steps(
        &mut self,
        canary: &Node,
        known: &dyn Fn(&str) -> bool,
    ) -> Option<Vec<CanaryStepConfig>> {
        let file = self.file;
        let mut reader = MapReader::new(file, canary, "`canary`", self.diagnostics)?;
        let steps = reader.get("steps");
        reader.finish(self.diagnostics);
        let Some(items) = steps
            .and_then(Node::as_seq)
            .filter(|items| !items.is_empty())
        else {
            self.error(
                canary.head_span(file),
                "`canary` needs `steps`: a list of `hosts: N`, `percent: P`, `pause: 30s` or `analysis: NAME`",
            );
            return None;
        };
        let mut out = Vec::new();
        for item in items {
            let Some(entries) = item.as_map().filter(|entries| entries.len() == 1) else {
                self.error(
                    item.head_span(file),
                    "a canary step is one of `hosts: N`, `percent: P`, `pause: 30s`, `analysis: NAME`",
                );
                continue;
            };
            let (key, value) = &entries[0];
            match key.as_str() {
                Some("hosts") => {
                    out.push(CanaryStepConfig::Hosts(self.count(
                        Some(value),
                        "`hosts`",
                        1,
                        1..=10_000,
                    ) as usize));
                }
                Some("percent") => {
                    out.push(CanaryStepConfig::Percent(self.count(
                        Some(value),
                        "`percent`",
                        100,
                        1..=100,
                    ) as u32));
                }
                Some("pause") => {
                    out.push(CanaryStepConfig::Pause(self.duration(
                        Some(value),
                        "`pause`",
                        0,
                    )));
                }
                Some("analysis") => {
                    let Some(name) = expect_text(file, value, "`analysis`", self.diagnostics)
                    else {
                        continue;
                    };
                    if !known(name) {
                        self.error(
                            value.span,
                            format!("no analysis `{name}` in this environment's `analyses`"),
                        );
                        continue;
                    }
                    out.push(CanaryStepConfig::Analysis(name.to_string()));
                }
                _ => {
                    self.error(
                        key.span,
                        "a canary step is one of `hosts: N`, `percent: P`, `pause: 30s`, `analysis: NAME`",
                    );
                }
            }
        }
        Some(out)
    }

    fn analyses(&mut self, node: &Node) -> Vec<AnalysisConfig> {
        let file = self.file;
        let mut out = Vec::new();
        for (name, _, value) in
            crate::reader::named_entries(file, node, "`analyses`", self.diagnostics)
        {
            let Some(mut reader) =
                MapReader::new(file, value, format!("analysis `{name}`"), self.diagnostics)
            else {
                continue;
            };
            let prometheus = reader.get("prometheus");
            let metrics = reader.get("metrics");
            reader.finish(self.diagnostics);
            let Some(prometheus) = prometheus else {
                self.error(
                    value.head_span(file),
                    format!("analysis `{name}` needs `prometheus`: the URL of a Prometheus-compatible API"),
                );
                continue;
            };
            let Some(url) = expect_text(file, prometheus, "`prometheus`", self.diagnostics) else {
                continue;
            };
            if !(url.starts_with("http://") || url.starts_with("https://"))
                || url.contains(['?', '#'])
                || url.contains(char::is_whitespace)
            {
                self.error(
                    prometheus.span,
                    "`prometheus` must be an http:// or https:// base URL, without a query or fragment",
                );
                continue;
            }
            let Some(items) = metrics
                .and_then(Node::as_seq)
                .filter(|items| !items.is_empty())
            else {
                self.error(
                    value.head_span(file),
                    format!("analysis `{name}` needs `metrics`: a list of `{{ name, query, success_condition }}`"),
                );
                continue;
            };
            let mut metric_configs: Vec<MetricConfig> = Vec::new();
            for item in items {
                if let Some(metric) = self.metric(item) {
                    if metric_configs.iter().any(|other| other.name == metric.name) {
                        self.error(
                            item.head_span(file),
                            format!("analysis `{name}` has two metrics named `{}`", metric.name),
                        );
                        continue;
                    }
                    metric_configs.push(metric);
                }
            }
            out.push(AnalysisConfig {
                name: name.to_string(),
                prometheus: url.to_string(),
                metrics: metric_configs,
            });
        }
        out
    }

    fn metric(&mut self, item: &Node) -> Option<MetricConfig> {
        let file = self.file;
        let mut reader = MapReader::new(file, item, "a metric", self.diagnostics)?;
        let name = reader.get("name");
        let query = reader.get("query");
        let interval = reader.get("interval");
        let count = reader.get("count");
        let initial_delay = reader.get("initial_delay");
        let success = reader.get("success_condition");
        let failure = reader.get("failure_condition");
        let failure_limit = reader.get("failure_limit");
        let inconclusive_limit = reader.get("inconclusive_limit");
        let error_limit = reader.get("consecutive_error_limit");
        reader.finish(self.diagnostics);
        let (Some(name), Some(query)) = (name, query) else {
            self.error(item.head_span(file), "a metric needs `name` and `query`");
            return None;
        };
        let name = expect_text(file, name, "`name`", self.diagnostics)?.to_string();
        let query_text = expect_text(file, query, "`query`", self.diagnostics)?.to_string();
        if let Err(error) = promql_parser::parser::parse(&query_text) {
            self.error(
                query.span,
                format!("metric `{name}`: the query is not valid PromQL: {error}"),
            );
            return None;
        }
        let names = sorat_expr::NameSet::new().with_named_values(["result", "results"]);
        let mut condition = |node: Option<&Node>, what: &str| -> Option<Option<String>> {
            let Some(node) = node else {
                return Some(None);
            };
            let text = expect_text(file, node, what, self.diagnostics)?.to_string();
            if let Err(error) = sorat_expr::parse(&text, &names) {
                self.error(node.span, format!("metric `{name}`: {what}: {error}"));
                return None;
            }
            Some(Some(text))
        };
        let success_condition = condition(success, "`success_condition`")?;
        let failure_condition = condition(failure, "`failure_condition`")?;
        if success_condition.is_none() && failure_condition.is_none() {
            self.error(
                item.head_span(file),
                format!("metric `{name}` needs `success_condition` or `failure_condition` (e.g. `result[0] < 0.01`)"),
            );
            return None;
        }
        let interval_node = interval;
        let interval = self.duration(interval, "`interval`", 60);
        let initial_delay = self.duration(initial_delay, "`initial_delay`", 0);
        let count_value = self.count(count, "`count`", 1, 1..=100_000) as u32;
        if count_value > 1 && interval.is_zero() {
            self.error(
                interval_node.map_or(item.head_span(file), |node| node.span),
                format!("metric `{name}`: `interval` must be above 0 when `count` is above 1"),
            );
            return None;
        }
        Some(MetricConfig {
            name,
            query: query_text,
            interval,
            count: count_value,
            initial_delay,
            success_condition,
            failure_condition,
            failure_limit: self.count(failure_limit, "`failure_limit`", 0, 0..=100_000) as u32,
            inconclusive_limit: self.count(
                inconclusive_limit,
                "`inconclusive_limit`",
                0,
                0..=100_000,
            ) as u32,
            consecutive_error_limit: self.count(
                error_limit,
                "`consecutive_error_limit`",
                4,
                0..=100_000,
            ) as u32,
        })
    }

    fn health(&mut self, node: &Node) -> Option<HealthConfig> {
        let file = self.file;
        let mut reader = MapReader::new(file, node, "`health`", self.diagnostics)?;
        let http = reader.get("http");
        let tcp = reader.get("tcp");
        let command = reader.get("command");
        let interval = reader.get("interval");
        let timeout = reader.get("timeout");
        let threshold = reader.get("success_threshold");
        let failures = reader.get("failure_threshold");
        reader.finish(self.diagnostics);
        let check = match (http, tcp, command) {
            (Some(http), None, None) => {
                let mut http_reader =
                    MapReader::new(file, http, "`health.http`", self.diagnostics)?;
                let path = http_reader.get("path");
                let expect = http_reader.get("expect");
                http_reader.finish(self.diagnostics);
                let path = match path {
                    Some(path) => {
                        expect_text(file, path, "`health.http.path`", self.diagnostics)?.to_string()
                    }
                    None => "/".into(),
                };
                if !path.starts_with('/') {
                    self.error(http.span, "`health.http.path` must start with `/`");
                    return None;
                }
                let expect = self.count(expect, "`health.http.expect`", 200, 100..=599) as u16;
                HealthCheckKind::Http { path, expect }
            }
            (None, Some(_), None) => HealthCheckKind::Tcp,
            (None, None, Some(command)) => HealthCheckKind::Command(
                expect_text(file, command, "`health.command`", self.diagnostics)?.to_string(),
            ),
            _ => {
                self.error(
                    node.head_span(file),
                    "`health` needs exactly one of `http`, `tcp` or `command`",
                );
                return None;
            }
        };
        Some(HealthConfig {
            check,
            interval: match interval {
                Some(_) => self.at_least(interval, "`health.interval`", 1, 0),
                None => Duration::from_millis(500),
            },
            timeout: self.at_least(timeout, "`health.timeout`", 30, 1),
            success_threshold: self.count(threshold, "`health.success_threshold`", 1, 1..=100)
                as u32,
            failure_threshold: self.count(failures, "`health.failure_threshold`", 3, 1..=100)
                as u32,
        })
    }

    fn project(&mut self, node: &Node) -> Option<ProjectConfig> {
        let file = self.file;
        let mut reader = MapReader::new(file, node, "a project", self.diagnostics)?;
        let name_node = reader.get("name");
        let repo_node = reader.get("repo");
        let dir = reader.get("dir");
        let pipeline = reader.get("pipeline");
        let branch = reader.get("branch");
        let webhook = reader.get("webhook");
        let poll = reader.get("poll");
        let status = reader.get("status");
        reader.finish(self.diagnostics);
        let Some(name_node) = name_node else {
            self.error(node.head_span(file), "a project needs a `name`");
            return None;
        };
        let name = expect_text(file, name_node, "`name`", self.diagnostics)?;
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            || name.starts_with('.')
        {
            self.error(
                name_node.span,
                format!("project name `{name}` must be 1 to 64 letters, digits, `-`, `_` or `.` (not first)"),
            );
            return None;
        }
        let Some(repo_node) = repo_node else {
            self.error(name_node.span, format!("project `{name}` needs a `repo`"))
                .hint =
                Some("a path to a local repository, or a file://, https:// or ssh:// URL".into());
            return None;
        };
        let repo_text = expect_text(file, repo_node, "`repo`", self.diagnostics)?;
        let repo = if repo_text.contains("://") || repo_text.starts_with("git@") {
            repo_text.to_string()
        } else {
            self.base.join(repo_text).to_string_lossy().into_owned()
        };
        let dir = match dir {
            Some(node) => {
                let text = expect_text(file, node, "`dir`", self.diagnostics)?;
                let clean = text.trim_matches('/');
                if clean.split('/').any(|part| part == "..") {
                    self.error(node.span, "`dir` must stay inside the repository (no `..`)");
                    return None;
                }
                clean.to_string()
            }
            None => String::new(),
        };
        let pipeline = match pipeline {
            Some(node) => {
                let text = expect_text(file, node, "`pipeline`", self.diagnostics)?;
                if text.starts_with('/') || text.split('/').any(|part| part == "..") {
                    self.error(
                        node.span,
                        "`pipeline` is a path inside the project's folder (relative, no `..`)",
                    );
                    return None;
                }
                text.to_string()
            }
            None => ".sorat/pipeline.yaml".into(),
        };
        let branch = match branch {
            Some(node) => expect_text(file, node, "`branch`", self.diagnostics)?.to_string(),
            None => "main".into(),
        };
        let webhook_secret = match webhook {
            Some(node) => {
                let mut reader = MapReader::new(file, node, "`webhook`", self.diagnostics)?;
                let secret = reader.get("secret");
                reader.finish(self.diagnostics);
                match secret {
                    Some(node) => Some(self.secret_ref(node, "`webhook.secret`")?),
                    None => {
                        self.error(node.head_span(file), "`webhook` needs a `secret`");
                        return None;
                    }
                }
            }
            None => None,
        };
        let poll = match poll {
            Some(node) => {
                let text = expect_text(file, node, "`poll`", self.diagnostics)?;
                match duration::parse_duration(text) {
                    Ok(interval) if interval >= Duration::from_secs(1) => Some(interval),
                    Ok(_) => {
                        self.error(node.span, "`poll` must be at least 1s");
                        return None;
                    }
                    Err(error) => {
                        self.error(node.span, format!("`poll`: {error}"));
                        return None;
                    }
                }
            }
            None => None,
        };
        let status = match status {
            Some(node) => Some(self.status(node)?),
            None => None,
        };
        Some(ProjectConfig {
            name: name.to_string(),
            span: name_node.span,
            repo,
            dir,
            pipeline,
            branch,
            webhook_secret,
            poll,
            status,
        })
    }

    fn status(&mut self, node: &Node) -> Option<StatusConfig> {
        let file = self.file;
        let mut reader = MapReader::new(file, node, "`status`", self.diagnostics)?;
        let api = reader.get("api");
        let repository = reader.get("repository");
        let token = reader.get("token");
        reader.finish(self.diagnostics);
        let api = match api {
            Some(node) => expect_text(file, node, "`status.api`", self.diagnostics)?
                .trim_end_matches('/')
                .to_string(),
            None => "https://api.github.com".into(),
        };
        let Some(repository_node) = repository else {
            self.error(
                node.head_span(file),
                "`status` needs a `repository` (`owner/name`)",
            );
            return None;
        };
        let repository = expect_text(
            file,
            repository_node,
            "`status.repository`",
            self.diagnostics,
        )?;
        if repository.split('/').count() != 2 || repository.split('/').any(str::is_empty) {
            self.error(
                repository_node.span,
                format!("`status.repository` must be `owner/name`, found `{repository}`"),
            );
            return None;
        }
        let Some(token) = token else {
            self.error(
                node.head_span(file),
                "`status` needs a `token` (`${{ secrets.NAME }}`)",
            );
            return None;
        };
        let token = self.secret_ref(token, "`status.token`")?;
        Some(StatusConfig {
            api,
            repository: repository.to_string(),
            token,
        })
    }

    fn secret_ref(&mut self, node: &Node, what: &str) -> Option<SecretRef> {
        let text = expect_text(self.file, node, what, self.diagnostics)?;
        match parse_secret_ref(text) {
            Some(name) => Some(SecretRef { name }),
            None => {
                self.error(
                    node.span,
                    format!("{what} must be a secret reference such as `${{{{ secrets.WEBHOOK_SECRET }}}}`, not a value"),
                )
                .hint = Some("set the value with `sorat secret set NAME` (secrets never go in the file)".into());
                None
            }
        }
    }

    /// These readers report a mistake and go on with the default, so that one run of
    /// `sorat validate` shows every mistake; `load` refuses the file when there was one.
    fn bool(&mut self, node: Option<&Node>, what: &str, default: bool) -> bool {
        let Some(node) = node else {
            return default;
        };
        match node.as_bool() {
            Some(value) => value,
            None => {
                self.error(
                    node.span,
                    format!("{what} must be true or false, found {}", node.kind_name()),
                );
                default
            }
        }
    }

    fn duration(&mut self, node: Option<&Node>, what: &str, default_secs: u64) -> Duration {
        let default = Duration::from_secs(default_secs);
        let Some(node) = node else {
            return default;
        };
        let Some(text) = expect_text(self.file, node, what, self.diagnostics) else {
            return default;
        };
        match duration::parse_duration(text) {
            Ok(value) => value,
            Err(error) => {
                self.error(node.span, format!("{what}: {error}"));
                default
            }
        }
    }

    /// A duration of at least `min_secs`.
    fn at_least(
        &mut self,
        node: Option<&Node>,
        what: &str,
        default_secs: u64,
        min_secs: u64,
    ) -> Duration {
        let value = self.duration(node, what, default_secs);
        if value < Duration::from_secs(min_secs)
            && let Some(node) = node
        {
            self.error(node.span, format!("{what} must be at least {min_secs}s"));
        }
        value
    }

    fn count(
        &mut self,
        node: Option<&Node>,
        what: &str,
        default: i64,
        range: std::ops::RangeInclusive<i64>,
    ) -> i64 {
        let Some(node) = node else {
            return default;
        };
        match node.as_i64() {
            Some(value) if range.contains(&value) => value,
            _ => {
                self.error(
                    node.span,
                    format!(
                        "{what} must be a whole number from {} to {}",
                        range.start(),
                        range.end()
                    ),
                );
                default
            }
        }
    }
}

/// The name in `${{ secrets.NAME }}` (spaces inside the braces optional), or `None`.
pub fn parse_secret_ref(text: &str) -> Option<String> {
    let inner = text.trim().strip_prefix("${{")?.strip_suffix("}}")?.trim();
    let name = inner.strip_prefix("secrets.")?;
    (!name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit()))
    .then(|| name.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> (Option<PlatformConfig>, Vec<String>) {
        let file = SourceFile::new("/etc/sorat/sorat.yaml", text);
        let (config, diagnostics) = load(&file);
        let messages = diagnostics
            .into_sorted()
            .iter()
            .map(|d| format!("{}: {}", d.location().unwrap_or_default(), d.message))
            .collect();
        (config, messages)
    }

    #[test]
    fn service_env_takes_names_and_whole_secret_references() {
        let config = |env: &str| {
            load_text(&format!(
                "environments:\n  web:\n    targets: [ {{ local: {{ dir: a, port: 9001 }} }} ]\n    service:\n      command: ./server\n      env:\n{env}"
            ))
        };
        let (loaded, messages) =
            config("        GREETING: hello\n        DB_PASSWORD: ${{ secrets.DB_PASSWORD }}\n");
        assert!(messages.is_empty(), "{messages:?}");
        assert_eq!(
            loaded.unwrap().environments[0].env,
            [
                ("GREETING".to_owned(), "hello".to_owned()),
                (
                    "DB_PASSWORD".to_owned(),
                    "${{ secrets.DB_PASSWORD }}".to_owned()
                )
            ]
        );
        for (env, wanted) in [
            (
                "        DB-PASSWORD: x\n",
                "7:9: `service.env` key `DB-PASSWORD` must be a variable name",
            ),
            ("        PORT: \"1\"\n", "7:9: `service.env` key `PORT`"),
            (
                "        SORAT_RELEASE: \"1\"\n",
                "7:9: `service.env` key `SORAT_RELEASE`",
            ),
            (
                "        URL: postgres://u:${{ secrets.PW }}@db\n",
                "7:14: `service.env.URL` is plain text or a whole secret reference",
            ),
        ] {
            let (_, messages) = config(env);
            assert_eq!(messages.len(), 1, "{env}: {messages:?}");
            assert!(
                messages[0].starts_with(&format!("/etc/sorat/sorat.yaml:{wanted}")),
                "{env}: {messages:?}"
            );
        }
    }

    #[test]
    fn service_working_dir_is_a_folder_inside_the_release() {
        let config = |working_dir: &str| {
            load_text(&format!(
                "environments:\n  web:\n    targets: [ {{ local: {{ dir: a, port: 9001 }} }} ]\n    service: {{ command: ./server, working_dir: {working_dir} }}\n"
            ))
        };
        let (loaded, messages) = config("app/bin/");
        assert!(messages.is_empty(), "{messages:?}");
        assert_eq!(
            loaded.unwrap().environments[0].working_dir.as_deref(),
            Some("app/bin")
        );
        for bad in ["/srv/app", "../up", "app/../../x", "./app"] {
            let (_, messages) = config(bad);
            assert_eq!(messages.len(), 1, "{bad}: {messages:?}");
            assert!(
                messages[0].starts_with(
                    "/etc/sorat/sorat.yaml:4:48: `service.working_dir` is a folder inside the release"
                ),
                "{bad}: {messages:?}"
            );
        }
    }

    #[test]
    fn health_thresholds_have_defaults_and_bounds() {
        let config = |health: &str| {
            load_text(&format!(
                "environments:\n  web:\n    targets: [ {{ local: {{ dir: a, port: 9001 }} }} ]\n    service: {{ command: ./server }}\n{health}"
            ))
        };
        let (loaded, messages) = config("");
        assert!(messages.is_empty(), "{messages:?}");
        let health = &loaded.unwrap().environments[0].health;
        assert_eq!((health.success_threshold, health.failure_threshold), (1, 3));
        let (loaded, messages) = config(
            "    health: { http: { path: /healthz }, success_threshold: 2, failure_threshold: 5 }\n",
        );
        assert!(messages.is_empty(), "{messages:?}");
        let health = &loaded.unwrap().environments[0].health;
        assert_eq!((health.success_threshold, health.failure_threshold), (2, 5));
        let (_, messages) = config("    health: { tcp: true, failure_threshold: 0 }\n");
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert!(
            messages[0]
                == "/etc/sorat/sorat.yaml:5:45: `health.failure_threshold` must be a whole number from 1 to 100",
            "{messages:?}"
        );
    }

    #[test]
    fn blue_green_reads_slots_and_refuses_targets_without_slots() {
        let head = "environments:\n  production:\n    service: { command: ./server }\n    analyses:\n      errors:\n        prometheus: http://127.0.0.1:9090\n        metrics: [ { name: e, query: up, success_condition: 'result[0] == 1' } ]\n";
        let good = format!(
            "{head}    targets:\n      - local: {{ dir: a, port: 9001, slots: [9101, 9102] }}\n      - local: {{ dir: b, port: 9002, slots: [9201, 9202] }}\n      - ssh: {{ host: h, dir: d, port: 9001, slots: [9101, 9102] }}\n    strategy:\n      blue_green: {{ pre_promotion: errors, auto_promote: false, scale_down_delay: 2m, listen: 0.0.0.0 }}\n"
        );
        let (config, messages) = load_text(&good);
        assert!(messages.is_empty(), "{messages:?}");
        let production = &config.unwrap().environments[0];
        assert_eq!(
            production.strategy,
            StrategyConfig::BlueGreen {
                pre_promotion: Some("errors".to_owned()),
                auto_promote: false,
                scale_down_delay: Duration::from_secs(120),
                listen: std::net::IpAddr::from([0, 0, 0, 0]),
            }
        );
        assert_eq!(
            production.hosts[1].place,
            TargetPlace::Local {
                dir: PathBuf::from("/etc/sorat/b"),
                slots: Some([9201, 9202]),
            }
        );
        // An SSH host's ports are its own: the same numbers as a local target's are fine.
        assert!(matches!(
            &production.hosts[2].place,
            TargetPlace::Ssh(SshConfig {
                slots: Some([9101, 9102]),
                ..
            })
        ));
        // A host of another architecture gets the router named, relative to the config file.
        let (config, messages) = load_text(&format!(
            "{head}    targets: [ {{ ssh: {{ host: h, dir: d, port: 9001, slots: [9101, 9102], router: bin/sorat-aarch64 }} }} ]\n    strategy: blue-green\n"
        ));
        assert!(messages.is_empty(), "{messages:?}");
        assert!(matches!(
            &config.unwrap().environments[0].hosts[0].place,
            TargetPlace::Ssh(SshConfig { router: Some(router), .. })
                if router == Path::new("/etc/sorat/bin/sorat-aarch64")
        ));
        // The short form takes the defaults.
        let (config, messages) = load_text(&format!(
            "{head}    targets: [ {{ local: {{ dir: a, port: 9001, slots: [9101, 9102] }} }} ]\n    strategy: blue-green\n"
        ));
        assert!(messages.is_empty(), "{messages:?}");
        assert!(matches!(
            config.unwrap().environments[0].strategy,
            StrategyConfig::BlueGreen { auto_promote: true, scale_down_delay, .. } if scale_down_delay == Duration::from_secs(30)
        ));

        let bad = [
            (
                "    targets: [ { local: { dir: a, port: 9001 } } ]\n    strategy: blue-green\n",
                "8:16: blue-green needs `slots: [PORT, PORT]`",
            ),
            (
                "    targets: [ { ssh: { host: h, dir: d, port: 9001 } } ]\n    strategy: blue-green\n",
                "8:16: blue-green needs `slots: [PORT, PORT]`",
            ),
            (
                "    targets: [ { ssh: { host: h, dir: d, port: 9001, slots: [9101, 9101] } } ]\n    strategy: blue-green\n",
                "8:68: port 9101 is already used",
            ),
            (
                "    targets: [ { agent: { labels: [w], dir: d, port: 9001, slots: [9001, 9102] } } ]\n    strategy: blue-green\n",
                "8:68: port 9001 is already used",
            ),
            (
                "    targets: [ { local: { dir: a, port: 9001, slots: [9101] } } ]\n",
                "8:54: `slots` is two ports",
            ),
            (
                "    targets: [ { ssh: { host: h, dir: d, port: 9001, router: r } } ]\n",
                "8:62: `router` is the executable of the blue-green router: it needs `slots: [PORT, PORT]`",
            ),
            (
                "    targets: [ { local: { dir: a, port: 9001, slots: [9101, 9001] } } ]\n",
                "8:61: port 9001 is already used by a target on line 8",
            ),
            (
                "    targets: [ { local: { dir: a, port: 9001, slots: [9101, 9102] } } ]\n    strategy: { blue_green: { pre_promotion: nope } }\n",
                "9:46: no analysis `nope`",
            ),
            (
                "    targets: [ { local: { dir: a, port: 9001, slots: [9101, 9102] } } ]\n    strategy: { blue_green: { listen: localhost } }\n",
                "9:39: `blue_green.listen` is an IP address",
            ),
            (
                "    targets: [ { local: { dir: a, port: 9001, slots: [9101, 9102] } } ]\n    strategy: { blue_green: { auto_promote: maybe } }\n",
                "9:45: `blue_green.auto_promote` is true or false",
            ),
        ];
        for (tail, expected) in bad {
            let (_, messages) = load_text(&format!("{head}{tail}"));
            assert!(
                messages.iter().any(|message| message.contains(expected)),
                "{tail}: {messages:?}"
            );
        }
    }

    #[test]
    fn environments_read_local_and_ssh_targets() {
        let (config, messages) = load_text(
            "environments:\n  production:\n    targets:\n      - local: { dir: hosts/a, port: 9001 }\n      - name: web-2\n        ssh: { host: 10.0.0.7, user: deploy, ssh_port: 2222, key: keys/deploy, known_hosts: keys/known_hosts, dir: /srv/web, port: 9001 }\n      - ssh: { host: web3.example.com, dir: web, port: 8080 }\n    service: { command: ./server }\n",
        );
        assert!(messages.is_empty(), "{messages:?}");
        let production = &config.unwrap().environments[0];
        assert_eq!(
            production.hosts[0].place,
            TargetPlace::Local {
                dir: PathBuf::from("/etc/sorat/hosts/a"),
                slots: None,
            }
        );
        assert_eq!(production.hosts[1].name.as_deref(), Some("web-2"));
        assert_eq!(
            production.hosts[1].place,
            TargetPlace::Ssh(SshConfig {
                host: "10.0.0.7".to_owned(),
                user: Some("deploy".to_owned()),
                ssh_port: 2222,
                key: Some(PathBuf::from("/etc/sorat/keys/deploy")),
                known_hosts: Some(PathBuf::from("/etc/sorat/keys/known_hosts")),
                dir: "/srv/web".to_owned(),
                slots: None,
                router: None,
            })
        );
        // The same service port on another host is fine; defaults apply.
        assert_eq!(production.hosts[1].port, 9001);
        let (config, messages) = load_text(
            "environments:\n  fleet:\n    targets:\n      - agent: { labels: [web, eu], dir: /srv/web, port: 8080, slots: [8081, 8082] }\n    service: { command: ./server }\n",
        );
        assert!(messages.is_empty(), "{messages:?}");
        assert_eq!(
            config.unwrap().environments[0].hosts[0].place,
            TargetPlace::Agent {
                labels: vec!["web".to_owned(), "eu".to_owned()],
                dir: "/srv/web".to_owned(),
                slots: Some([8081, 8082]),
            }
        );
        let TargetPlace::Ssh(third) = &production.hosts[2].place else {
            panic!("{:?}", production.hosts[2])
        };
        assert_eq!((third.ssh_port, third.user.as_deref()), (22, None));
    }

    #[test]
    fn canary_steps_analyses_and_bake_are_read_and_checked() {
        let head = "environments:\n  production:\n    targets: [ { local: { dir: a, port: 9001 } } ]\n    service: { command: ./server }\n";
        let good = format!(
            "{head}    strategy:\n      canary:\n        steps:\n          - hosts: 1\n          - pause: 30s\n          - analysis: errors\n          - percent: 50\n    analyses:\n      errors:\n        prometheus: http://127.0.0.1:9090\n        metrics:\n          - name: error-ratio\n            query: sum(rate(http_requests_total{{code=\"500\"}}[1m])) / sum(rate(http_requests_total[1m]))\n            interval: 10s\n            count: 6\n            initial_delay: 30s\n            success_condition: result[0] < 0.01\n            failure_limit: 1\n    bake: {{ duration: 10m, analysis: errors }}\n"
        );
        let (config, messages) = load_text(&good);
        assert!(messages.is_empty(), "{messages:?}");
        let production = &config.unwrap().environments[0];
        assert_eq!(
            production.strategy,
            StrategyConfig::Canary {
                steps: vec![
                    CanaryStepConfig::Hosts(1),
                    CanaryStepConfig::Pause(Duration::from_secs(30)),
                    CanaryStepConfig::Analysis("errors".to_owned()),
                    CanaryStepConfig::Percent(50),
                ]
            }
        );
        let metric = &production.analyses[0].metrics[0];
        assert_eq!(
            (
                metric.count,
                metric.failure_limit,
                metric.consecutive_error_limit
            ),
            (6, 1, 4)
        );
        assert_eq!(metric.initial_delay, Duration::from_secs(30));
        assert_eq!(
            production.bake,
            Some(BakeConfig {
                duration: Duration::from_secs(600),
                analysis: Some("errors".to_owned())
            })
        );

        let bad = [
            ("query: sum(rate(x[1m])", "the query is not valid PromQL"),
            ("success_condition: result[0] <", "`success_condition`"),
            (
                "failure_limit: -1",
                "`failure_limit` must be a whole number",
            ),
        ];
        for (line, expected) in bad {
            let key = line.split(':').next().unwrap();
            let text = good
                .lines()
                .map(|existing| {
                    if existing.trim_start().starts_with(&format!("{key}:")) {
                        format!("            {line}")
                    } else {
                        existing.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            let text = if text.contains(line) {
                text
            } else {
                text.replace(
                    "            count: 6",
                    &format!("            count: 6\n            {line}"),
                )
            };
            let (_, messages) = load_text(&text);
            assert!(
                messages.iter().any(|message| message.contains(expected)),
                "{line}: {messages:?}"
            );
        }
        let (_, messages) = load_text(&good.replace("- analysis: errors", "- analysis: latency"));
        assert!(
            messages
                .iter()
                .any(|message| message.contains(":10:23:")
                    && message.contains("no analysis `latency`")),
            "{messages:?}"
        );
    }

    #[test]
    fn environment_references_patterns_and_metric_mistakes_are_located() {
        let env = |extra: &str| {
            format!(
                "environments:\n  staging:\n    targets: [ {{ local: {{ dir: a, port: 9001 }} }} ]\n    service: {{ command: x }}\n  production:\n    targets: [ {{ local: {{ dir: b, port: 9002 }} }} ]\n    service: {{ command: x }}\n{extra}"
            )
        };
        let cases = [
            (
                "    requires: [stagign]\n",
                "`requires`: no environment `stagign` in `environments`",
            ),
            (
                "    requires: [production]\n",
                "environment `production` cannot require itself",
            ),
            (
                "    branches: ['release/[0-9']\n",
                "`branches`: `release/[0-9` is not a valid pattern",
            ),
            (
                "    analyses:\n      a:\n        prometheus: 'http://p:9090/?x=1'\n        metrics: [ { name: m, query: up, success_condition: 'result[0] > 0' } ]\n",
                "without a query or fragment",
            ),
            (
                "    analyses:\n      a:\n        prometheus: http://p:9090\n        metrics:\n          - { name: m, query: up, success_condition: 'result[0] > 0' }\n          - { name: m, query: up, success_condition: 'result[0] > 1' }\n",
                "analysis `a` has two metrics named `m`",
            ),
            (
                "    analyses:\n      a:\n        prometheus: http://p:9090\n        metrics: [ { name: m, query: up, count: 3, interval: 0s, success_condition: 'result[0] > 0' } ]\n",
                "`interval` must be above 0 when `count` is above 1",
            ),
        ];
        for (extra, expected) in cases {
            let (_, messages) = load_text(&env(extra));
            assert!(
                messages.iter().any(|message| message.contains(expected)),
                "{extra}: {messages:?}"
            );
        }
        let (_, messages) = load_text(
            "environments:\n  staging:\n    targets:\n      - { name: w, local: { dir: a, port: 9001 } }\n      - { name: w, local: { dir: b, port: 9002 } }\n    service: { command: x }\n",
        );
        assert!(
            messages
                .iter()
                .any(|message| message.contains("two targets are named `w`")),
            "{messages:?}"
        );
        let (config, messages) = load_text(&env(
            "    requires: [staging]\n    branches: [main, 'release/*']\n",
        ));
        assert!(messages.is_empty(), "{messages:?}");
        assert_eq!(config.unwrap().environments[1].requires, ["staging"]);
    }

    #[test]
    fn rolling_takes_a_batch_or_a_max_unavailable_count_or_share() {
        let targets: String = (0..5)
            .map(|i| format!("      - local: {{ dir: h{i}, port: {} }}\n", 9100 + i))
            .collect();
        let strategy = |rolling: &str| {
            let text = format!(
                "environments:\n  web:\n    targets:\n{targets}    service: {{ command: x }}\n    strategy: {{ rolling: {rolling} }}\n"
            );
            let (config, messages) = load_text(&text);
            (
                config.map(|config| config.environments[0].strategy.clone()),
                messages,
            )
        };
        assert_eq!(
            strategy("{ batch: 2 }").0,
            Some(StrategyConfig::Rolling { batch: 2 })
        );
        assert_eq!(
            strategy("{ max_unavailable: 3 }").0,
            Some(StrategyConfig::Rolling { batch: 3 })
        );
        // 40% of 5 hosts is 2; 1% still moves one host at a time.
        assert_eq!(
            strategy("{ max_unavailable: 40% }").0,
            Some(StrategyConfig::Rolling { batch: 2 })
        );
        assert_eq!(
            strategy("{ max_unavailable: 1% }").0,
            Some(StrategyConfig::Rolling { batch: 1 })
        );
        let (_, messages) = strategy("{ max_unavailable: 150% }");
        assert!(
            messages
                .iter()
                .any(|m| m.contains("percentage from 1% to 100%")),
            "{messages:?}"
        );
        let (_, messages) = strategy("{ batch: 1, max_unavailable: 2 }");
        assert!(
            messages.iter().any(|m| m.contains("not both")),
            "{messages:?}"
        );
    }

    #[test]
    fn target_mistakes_are_located() {
        let cases = [
            (
                "- ssh: { host: a, port: 80 }",
                "4:14: `ssh` needs `host`, `dir` and `port`",
            ),
            (
                "- ssh: { host: a, dir: d, port: 80, ssh_port: 70000 }",
                "4:53: `ssh_port` must be from 1 to 65535",
            ),
            (
                "- { local: { dir: d, port: 1 }, ssh: { host: a, dir: d, port: 2 } }",
                "4:9: a target is `local` or `ssh`, not both",
            ),
            ("- vm: build", "4:9: unknown key `vm`"),
            (
                "- agent: { dir: d, port: 80 }",
                "4:16: `agent` needs `labels` (which agent), `dir` and `port`",
            ),
            (
                "- { agent: { labels: [a], dir: d, port: 1 }, local: { dir: d, port: 2 } }",
                "4:9: a target is one of `local`, `ssh` or `agent`",
            ),
            (
                "- ssh: { host: a, dir: d, port: 80, password: x }",
                "4:43: unknown key `password`",
            ),
            (
                "- ssh: { host: '-oProxyCommand=x', dir: d, port: 80 }",
                "4:14: `host` `-oProxyCommand=x` is not a host name or address",
            ),
        ];
        for (target, expected) in cases {
            let text = format!(
                "environments:\n  staging:\n    targets:\n    {target}\n    service: {{ command: x }}\n"
            )
            .replace("targets:\n    -", "targets:\n      -");
            let (_, messages) = load_text(&text);
            assert!(
                messages.iter().any(|message| message.contains(expected)),
                "{target}: {messages:?}"
            );
        }
    }

    #[test]
    fn an_empty_file_gives_every_default() {
        let (config, messages) = load_text("{}\n");
        let config = config.unwrap();
        assert!(messages.is_empty(), "{messages:?}");
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.server.data, PathBuf::from("/etc/sorat/.sorat"));
        assert_eq!(config.server.database, "sqlite");
        assert_eq!(config.server.lease, Duration::from_secs(30));
        assert!(config.server.local_agent.enabled);
        assert!(config.projects.is_empty());
    }

    #[test]
    fn projects_are_read_with_their_paths_resolved() {
        let (config, messages) = load_text(
            "server:\n  listen: 127.0.0.1:9000\n  queue_timeout: 2m\nprojects:\n  - name: shop\n    repo: ../git/shop\n    dir: services/api/\n    webhook: { secret: '${{ secrets.SHOP_HOOK }}' }\n    poll: 30s\n",
        );
        assert!(messages.is_empty(), "{messages:?}");
        let config = config.unwrap();
        assert_eq!(config.server.external_url, "http://127.0.0.1:9000");
        assert_eq!(config.server.queue_timeout, Duration::from_secs(120));
        let shop = &config.projects[0];
        assert_eq!(shop.repo, "/etc/sorat/../git/shop");
        assert_eq!(shop.dir, "services/api");
        assert_eq!(shop.pipeline, ".sorat/pipeline.yaml");
        assert_eq!(shop.webhook_secret.as_ref().unwrap().name, "SHOP_HOOK");
        assert_eq!(shop.poll, Some(Duration::from_secs(30)));
    }

    #[test]
    fn mistakes_are_located() {
        let (config, messages) = load_text(
            "server:\n  listen: localhost\n  lease: 5 minutes\nprojects:\n  - name: shop\n    repo: /srv/shop\n    webhook: { secret: hunter2 }\n  - name: shop\n    repo: /srv/other\n  - name: bad/name\n    repo: x\n  - name: nowhere\n    repos: x\n",
        );
        assert!(config.is_none());
        let expected = [
            "2:11: `server.listen` must be an address with a port, found `localhost`",
            "3:10: `server.lease`:",
            "7:24: `webhook.secret` must be a secret reference",
            "10:11: project name `bad/name`",
            "13:5: unknown key `repos` in a project",
            "12:11: project `nowhere` needs a `repo`",
        ];
        for prefix in expected {
            assert!(
                messages.iter().any(|m| m.contains(prefix)),
                "no `{prefix}` in {messages:#?}"
            );
        }
    }

    #[test]
    fn later_sections_are_accepted_with_a_warning() {
        let (config, messages) = load_text("monitoring:\n  scrape_configs: []\n");
        assert!(config.is_some());
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert!(messages[0].contains("`monitoring` is not read by this version"));
    }

    #[test]
    fn secret_references_are_recognised() {
        assert_eq!(
            parse_secret_ref("${{ secrets.A_1 }}").as_deref(),
            Some("A_1")
        );
        assert_eq!(parse_secret_ref("${{secrets.X}}").as_deref(), Some("X"));
        assert_eq!(parse_secret_ref("secrets.X"), None);
        assert_eq!(parse_secret_ref("${{ vars.X }}"), None);
        assert_eq!(parse_secret_ref("${{ secrets.1X }}"), None);
    }
}

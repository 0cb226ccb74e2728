//! From a located YAML tree to a [`Pipeline`], with every mistake reported at once.
//!
//! The loader never stops at the first problem: each part that can be read is read, each
//! part that cannot becomes a [`Diagnostic`] and is left out, and the caller decides (a
//! pipeline with errors never runs).

use std::time::Duration;

use indexmap::IndexMap;
use sorat_config::reader::{expect_text, expect_text_list, named_entries};
use sorat_config::yaml::{self, Node};
use sorat_config::{Diagnostic, Diagnostics, MapReader, SourceFile, Span, duration, suggest};
use sorat_expr::{Template, Value};

use crate::contexts::{self, Place};
use crate::spec::*;

/// Loads a pipeline from its source. Returns the pipeline when it has no errors (warnings
/// may still be present), and every diagnostic found.
pub fn load(file: &SourceFile) -> (Option<Pipeline>, Diagnostics) {
    let (root, mut diagnostics) = yaml::parse(file);
    let Some(root) = root else {
        if !diagnostics.has_errors() {
            diagnostics.push(Diagnostic::error(
                file,
                Span::new(0, 0),
                "the pipeline file is empty",
            ));
        }
        return (None, diagnostics);
    };
    let mut loader = Loader {
        file,
        diagnostics: &mut diagnostics,
    };
    let pipeline = loader.pipeline(&root);
    if diagnostics.has_errors() {
        (None, diagnostics)
    } else {
        (pipeline, diagnostics)
    }
}

/// Job ids, as GitHub allows them: a letter or `_`, then letters, digits, `-` and `_`.
pub fn is_valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

struct Loader<'a> {
    file: &'a SourceFile,
    diagnostics: &'a mut Diagnostics,
}

impl<'a> Loader<'a> {
    fn error(&mut self, span: Span, message: impl Into<String>) -> &mut Diagnostic {
        self.diagnostics
            .add(Diagnostic::error(self.file, span, message))
    }

    fn warning(&mut self, span: Span, message: impl Into<String>) -> &mut Diagnostic {
        self.diagnostics
            .add(Diagnostic::warning(self.file, span, message))
    }

    fn reader<'n>(&mut self, node: &'n Node, what: impl Into<String>) -> Option<MapReader<'n>>
    where
        'a: 'n,
    {
        MapReader::new(self.file, node, what, self.diagnostics)
    }

    fn pipeline(&mut self, root: &Node) -> Option<Pipeline> {
        let mut reader = self.reader(root, "the pipeline")?;
        let name = reader
            .get("name")
            .and_then(|node| expect_text(self.file, node, "`name`", self.diagnostics))
            .map(str::to_string);
        let run_name = reader
            .get("run-name")
            .and_then(|node| self.template(node, Place::RunName, "`run-name`"));
        let triggers = match reader.get_entry("on") {
            Some((_, node)) => self.triggers(node),
            None => {
                self.error(root.head_span(self.file), "the pipeline has no `on:`")
                    .hint = Some(
                    "add e.g. `on: [push, pull_request]`; `sorat run` runs it whatever the event"
                        .into(),
                );
                Triggers::default()
            }
        };
        let env = reader
            .get("env")
            .map(|node| self.env(node, Place::PipelineEnv, "the pipeline's `env`"))
            .unwrap_or_default();
        let vars = reader
            .get("vars")
            .map(|node| self.vars(node))
            .unwrap_or_default();
        let defaults = reader
            .get("defaults")
            .map(|node| self.defaults(node, Place::PipelineEnv))
            .unwrap_or_default();
        let concurrency = reader
            .get("concurrency")
            .and_then(|node| self.concurrency(node, Place::RunName));
        // Accepted so that ported workflows load; there is no token whose scope they could set.
        reader.ignore(&["permissions"]);
        let jobs = match reader.get("jobs") {
            Some(node) => self.jobs(node),
            None => {
                self.error(root.head_span(self.file), "the pipeline has no `jobs:`");
                IndexMap::new()
            }
        };
        reader.finish(self.diagnostics);
        self.check_needs(&jobs);
        Some(Pipeline {
            file: self.file.clone(),
            name,
            run_name,
            triggers,
            env,
            vars,
            defaults,
            concurrency,
            jobs,
        })
    }

    fn triggers(&mut self, node: &Node) -> Triggers {
        let mut triggers = Triggers::default();
        // `on: push`, `on: [push, pull_request]` and `on: {push: ..., schedule: ...}`.
        let mut events: Vec<(&str, Span, Option<&Node>)> = Vec::new();
        if let Some(entries) = node.as_map() {
            for (key, value) in entries {
                match expect_text(self.file, key, "an event name", self.diagnostics) {
                    Some(name) => events.push((name, key.span, Some(value))),
                    None => continue,
                }
            }
        } else {
            for (name, item) in expect_text_list(self.file, node, "an event name", self.diagnostics)
            {
                events.push((name, item.span, None));
            }
        }
        for (name, span, value) in events {
            let null = Node {
                span,
                value: yaml::Value::Scalar(yaml::Scalar {
                    text: String::new(),
                    kind: yaml::ScalarKind::Null,
                    quoted: false,
                }),
            };
            let value = value.unwrap_or(&null);
            match name {
                "push" => triggers.push = Some(self.push_filter(value)),
                "pull_request" | "pull_request_target" => {
                    triggers.pull_request = Some(self.pull_request_filter(value))
                }
                "schedule" => triggers.schedule = self.schedule(value),
                "manual" | "workflow_dispatch" => triggers.manual = Some(self.manual(value)),
                other => {
                    let known = [
                        "push",
                        "pull_request",
                        "schedule",
                        "manual",
                        "workflow_dispatch",
                    ];
                    let diagnostic = self.warning(
                        span,
                        format!("the event `{other}` is not one Sorat triggers on; it is ignored"),
                    );
                    diagnostic.hint = Some(match suggest::closest(other, known) {
                        Some(candidate) if candidate != other => {
                            format!("did you mean `{candidate}`?")
                        }
                        _ => "Sorat triggers on push, pull_request, schedule and manual".into(),
                    });
                }
            }
        }
        triggers
    }

    fn push_filter(&mut self, node: &Node) -> PushFilter {
        let Some(mut reader) = self.reader(node, "`on.push`") else {
            return PushFilter::default();
        };
        let filter = PushFilter {
            branches: self.ref_filter(&mut reader, "branches", "branches-ignore", false),
            tags: self.ref_filter(&mut reader, "tags", "tags-ignore", false),
            paths: self.ref_filter(&mut reader, "paths", "paths-ignore", true),
        };
        reader.finish(self.diagnostics);
        filter
    }

    fn pull_request_filter(&mut self, node: &Node) -> PullRequestFilter {
        let Some(mut reader) = self.reader(node, "`on.pull_request`") else {
            return PullRequestFilter::default();
        };
        let branches = self.ref_filter(&mut reader, "branches", "branches-ignore", false);
        let paths = self.ref_filter(&mut reader, "paths", "paths-ignore", true);
        let types = reader
            .get("types")
            .map(|node| {
                expect_text_list(self.file, node, "a pull request type", self.diagnostics)
                    .into_iter()
                    .map(|(text, _)| text.to_string())
                    .collect()
            })
            .unwrap_or_default();
        reader.finish(self.diagnostics);
        PullRequestFilter {
            branches,
            paths,
            types,
        }
    }

    /// Reads `key` or `ignore_key` (not both, as GitHub says) into a filter.
    fn ref_filter(
        &mut self,
        reader: &mut MapReader<'_>,
        key: &'static str,
        ignore_key: &'static str,
        is_path: bool,
    ) -> RefFilter {
        let include = reader.get_entry(key);
        let ignore = reader.get_entry(ignore_key);
        if let (Some(_), Some((ignore_key_node, _))) = (include, ignore) {
            self.error(
                ignore_key_node.span,
                format!("`{key}` and `{ignore_key}` cannot both be set for one event"),
            )
            .hint = Some(format!("use `{key}` with `!pattern` entries to exclude"));
        }
        let (node, is_ignore_list) = match (include, ignore) {
            (Some((_, node)), _) => (node, false),
            (None, Some((_, node))) => (node, true),
            (None, None) => return RefFilter::default(),
        };
        let mut patterns = Vec::new();
        for (text, item) in expect_text_list(self.file, node, "a filter pattern", self.diagnostics)
        {
            let (negated, pattern) = match text.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, text),
            };
            match compile_filter_glob(pattern, is_path) {
                Ok(matcher) => patterns.push(FilterPattern {
                    text: pattern.to_string(),
                    negated,
                    matcher,
                }),
                Err(message) => {
                    self.error(item.span, format!("invalid pattern `{text}`: {message}"));
                }
            }
        }
        RefFilter {
            patterns,
            is_ignore_list,
        }
    }

    fn schedule(&mut self, node: &Node) -> Vec<Located<CronSchedule>> {
        let Some(items) = node.as_seq() else {
            self.error(
                node.head_span(self.file),
                format!("`schedule` must be a list, found {}", node.kind_name()),
            )
            .hint = Some("write `schedule: [{cron: '0 3 * * *'}]`".into());
            return Vec::new();
        };
        let mut schedules = Vec::new();
        for item in items {
            let Some(mut reader) = self.reader(item, "a `schedule` entry") else {
                continue;
            };
            let Some(cron_node) = reader.get("cron") else {
                self.error(item.head_span(self.file), "a `schedule` entry needs `cron`");
                reader.finish(self.diagnostics);
                continue;
            };
            reader.finish(self.diagnostics);
            let Some(expression) = expect_text(self.file, cron_node, "`cron`", self.diagnostics)
            else {
                continue;
            };
            match parse_cron(expression) {
                Ok(cron) => schedules.push(Located::new(
                    CronSchedule {
                        expression: expression.to_string(),
                        cron,
                    },
                    cron_node.span,
                )),
                Err(message) => {
                    self.error(
                        cron_node.span,
                        format!("invalid cron expression `{expression}`: {message}"),
                    )
                    .hint = Some(
                        "five fields: minute hour day-of-month month day-of-week, e.g. `30 5 * * 1-5`"
                            .into(),
                    );
                }
            }
        }
        schedules
    }

    fn manual(&mut self, node: &Node) -> Manual {
        let Some(mut reader) = self.reader(node, "`on.manual`") else {
            return Manual::default();
        };
        let mut inputs = IndexMap::new();
        if let Some(inputs_node) = reader.get("inputs") {
            for (name, key, value) in
                named_entries(self.file, inputs_node, "`inputs`", self.diagnostics)
            {
                if let Some(input) = self.manual_input(name, key, value) {
                    inputs.insert(name.to_string(), input);
                }
            }
        }
        reader.finish(self.diagnostics);
        Manual { inputs }
    }

    fn manual_input(&mut self, name: &str, key: &Node, node: &Node) -> Option<ManualInput> {
        let what = format!("input `{name}`");
        let mut reader = self.reader(node, what.clone())?;
        let description = reader
            .get("description")
            .and_then(|node| expect_text(self.file, node, "`description`", self.diagnostics))
            .map(str::to_string);
        let required = reader
            .get("required")
            .and_then(|node| self.bool_literal(node, "`required`"))
            .unwrap_or(false);
        let options: Vec<String> = reader
            .get("options")
            .map(|node| {
                expect_text_list(self.file, node, "an option", self.diagnostics)
                    .into_iter()
                    .map(|(text, _)| text.to_string())
                    .collect()
            })
            .unwrap_or_default();
        let kind = match reader.get("type") {
            None => InputKind::String,
            Some(type_node) => {
                match expect_text(self.file, type_node, "`type`", self.diagnostics) {
                    Some("string") => InputKind::String,
                    Some("boolean") => InputKind::Boolean,
                    Some("number") => InputKind::Number,
                    Some("environment") => InputKind::Environment,
                    Some("choice") => {
                        if options.is_empty() {
                            self.error(
                                type_node.span,
                                format!("{what} is a `choice` without `options`"),
                            );
                        }
                        InputKind::Choice(options.clone())
                    }
                    Some(other) => {
                        self.error(type_node.span, format!("unknown input type `{other}`"))
                            .hint =
                            Some("use string, boolean, number, choice or environment".into());
                        InputKind::String
                    }
                    None => InputKind::String,
                }
            }
        };
        let default = match reader.get("default") {
            None => None,
            Some(default_node) => {
                let text = default_node.scalar_text().unwrap_or("");
                match coerce_input(&kind, text) {
                    Ok(value) => Some(value),
                    Err(message) => {
                        self.error(
                            default_node.span,
                            format!("the default of {what} {message}"),
                        );
                        None
                    }
                }
            }
        };
        reader.finish(self.diagnostics);
        Some(ManualInput {
            description,
            required,
            default,
            kind,
            span: key.span,
        })
    }

    fn vars(&mut self, node: &Node) -> IndexMap<String, String> {
        let mut vars = IndexMap::new();
        for (name, _, value) in named_entries(self.file, node, "`vars`", self.diagnostics) {
            if let Some(text) =
                expect_text(self.file, value, "a variable's value", self.diagnostics)
            {
                vars.insert(name.to_string(), text.to_string());
            }
        }
        vars
    }

    fn env(&mut self, node: &Node, place: Place, what: &str) -> EnvMap {
        let mut env = EnvMap::new();
        if let Some(text) = node.as_str()
            && text.contains("${{")
        {
            self.error(
                node.span,
                format!("{what} must be a mapping of names to values"),
            )
            .hint = Some("Sorat does not expand a whole `env` from one expression".into());
            return env;
        }
        for (name, key, value) in named_entries(self.file, node, what, self.diagnostics) {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                self.error(
                    key.span,
                    format!("`{name}` is not a valid environment variable name"),
                );
                continue;
            }
            let value_text = if value.is_null() {
                Some("")
            } else {
                expect_text(self.file, value, "an environment value", self.diagnostics)
            };
            if let Some(text) = value_text
                && let Some(template) = self.template_text(text, value, place)
            {
                env.insert(name.to_string(), Located::new(template, value.span));
            }
        }
        env
    }

    fn defaults(&mut self, node: &Node, place: Place) -> RunDefaults {
        let Some(mut reader) = self.reader(node, "`defaults`") else {
            return RunDefaults::default();
        };
        let mut defaults = RunDefaults::default();
        if let Some(run) = reader.get("run")
            && let Some(mut run_reader) = self.reader(run, "`defaults.run`")
        {
            defaults.shell = run_reader.get("shell").and_then(|node| self.shell(node));
            defaults.working_directory = run_reader
                .get("working-directory")
                .and_then(|node| self.template(node, place, "`working-directory`"));
            run_reader.finish(self.diagnostics);
        }
        reader.finish(self.diagnostics);
        defaults
    }

    fn concurrency(&mut self, node: &Node, place: Place) -> Option<Concurrency> {
        if node.as_map().is_none() {
            let group = self.template(node, place, "`concurrency`")?;
            return Some(Concurrency {
                group,
                cancel_in_progress: false,
            });
        }
        let mut reader = self.reader(node, "`concurrency`")?;
        let group = match reader.get("group") {
            Some(group) => self.template(group, place, "`concurrency.group`"),
            None => {
                self.error(node.head_span(self.file), "`concurrency` needs a `group`");
                None
            }
        };
        let cancel_in_progress = reader
            .get("cancel-in-progress")
            .and_then(|node| self.bool_literal(node, "`cancel-in-progress`"))
            .unwrap_or(false);
        reader.finish(self.diagnostics);
        Some(Concurrency {
            group: group?,
            cancel_in_progress,
        })
    }

    fn jobs(&mut self, node: &Node) -> IndexMap<String, Job> {
        let mut jobs = IndexMap::new();
        let entries = named_entries(self.file, node, "`jobs`", self.diagnostics);
        if entries.is_empty() && node.as_map().is_some_and(<[_]>::is_empty) || node.is_null() {
            self.error(node.head_span(self.file), "`jobs` is empty")
                .hint = Some("add at least one job with `steps`".into());
        }
        for (id, key, value) in entries {
            if !is_valid_id(id) {
                self.error(key.span, format!("`{id}` is not a valid job id"))
                    .hint = Some(
                    "a job id starts with a letter or `_` and holds only letters, digits, `-` and `_`"
                        .into(),
                );
            }
            if let Some(job) = self.job(id, key, value) {
                jobs.insert(id.to_string(), job);
            }
        }
        jobs
    }

    fn job(&mut self, id: &str, key: &Node, node: &Node) -> Option<Job> {
        let what = format!("job `{id}`");
        let mut reader = self.reader(node, what.clone())?;
        let name = reader
            .get("name")
            .and_then(|node| self.template(node, Place::Job, "`name`"));
        let needs = reader
            .get("needs")
            .map(|node| {
                expect_text_list(self.file, node, "a job id in `needs`", self.diagnostics)
                    .into_iter()
                    .map(|(text, item)| Located::new(text.to_string(), item.span))
                    .collect()
            })
            .unwrap_or_default();
        let condition = reader
            .get("if")
            .and_then(|node| self.condition(node, Place::JobIf));
        let runs_on = reader
            .get("runs-on")
            .map(|node| self.runs_on(node))
            .unwrap_or_default();
        let strategy = reader
            .get("strategy")
            .map(|node| self.strategy(node))
            .unwrap_or_default();
        let timeout = self.timeout(&mut reader, Place::Job);
        let retry = reader.get("retry").and_then(|node| self.retry(node));
        let continue_on_error = reader
            .get("continue-on-error")
            .and_then(|node| self.bool_or_template(node, Place::Job, "`continue-on-error`"));
        let mut outputs = IndexMap::new();
        if let Some(outputs_node) = reader.get("outputs") {
            for (name, _, value) in
                named_entries(self.file, outputs_node, "`outputs`", self.diagnostics)
            {
                if let Some(template) = self.template(value, Place::JobOutputs, "an output") {
                    outputs.insert(name.to_string(), template);
                }
            }
        }
        let environment = reader
            .get("environment")
            .and_then(|node| self.environment(node));
        let concurrency = reader
            .get("concurrency")
            .and_then(|node| self.concurrency(node, Place::Job));
        let services = reader
            .get("services")
            .map(|node| self.services(node))
            .unwrap_or_default();
        let env = reader
            .get("env")
            .map(|node| self.env(node, Place::Job, "the job's `env`"))
            .unwrap_or_default();
        let defaults = reader
            .get("defaults")
            .map(|node| self.defaults(node, Place::Job))
            .unwrap_or_default();
        if let Some((container_key, _)) = reader.get_entry("container") {
            self.error(
                container_key.span,
                "`container` needs a container runtime, which `sorat run` does not use",
            )
            .hint = Some("run the job's steps on the machine; services are processes here".into());
        }
        if let Some((uses_key, _)) = reader.get_entry("uses") {
            self.error(
                uses_key.span,
                "reusable workflows (`jobs.<id>.uses`) are not supported",
            )
            .hint = Some("copy the called workflow's jobs into this pipeline".into());
        }
        reader.ignore(&["permissions"]);
        let steps = match reader.get("steps") {
            Some(node) => self.steps(node, id),
            None => {
                self.error(key.span, format!("{what} has no `steps`"));
                Vec::new()
            }
        };
        reader.finish(self.diagnostics);
        Some(Job {
            id: id.to_string(),
            id_span: key.span,
            name,
            needs,
            condition,
            runs_on,
            strategy,
            timeout,
            retry,
            continue_on_error,
            outputs,
            environment,
            concurrency,
            services,
            env,
            defaults,
            steps,
        })
    }

    fn runs_on(&mut self, node: &Node) -> Vec<Located<Template>> {
        if node.as_map().is_some() {
            let Some(mut reader) = self.reader(node, "`runs-on`") else {
                return Vec::new();
            };
            let labels = reader
                .get("labels")
                .map(|labels| self.runs_on(labels))
                .unwrap_or_default();
            reader.ignore(&["group"]);
            reader.finish(self.diagnostics);
            return labels;
        }
        expect_text_list(self.file, node, "a runner label", self.diagnostics)
            .into_iter()
            .filter_map(|(text, item)| {
                self.template_text(text, item, Place::Job)
                    .map(|template| Located::new(template, item.span))
            })
            .collect()
    }

    fn strategy(&mut self, node: &Node) -> Strategy {
        let Some(mut reader) = self.reader(node, "`strategy`") else {
            return Strategy::default();
        };
        let matrix = reader.get("matrix").and_then(|node| self.matrix(node));
        let fail_fast = reader
            .get("fail-fast")
            .and_then(|node| self.bool_or_template(node, Place::JobStrategy, "`fail-fast`"));
        let max_parallel = reader
            .get("max-parallel")
            .and_then(|node| match node.as_i64() {
                Some(value) if value >= 1 && value <= i64::from(u32::MAX) => Some(value as u32),
                _ => {
                    self.error(
                        node.span,
                        "`max-parallel` must be a whole number of at least 1",
                    );
                    None
                }
            });
        reader.finish(self.diagnostics);
        Strategy {
            matrix,
            fail_fast,
            max_parallel,
        }
    }

    fn matrix(&mut self, node: &Node) -> Option<Matrix> {
        if let Some(text) = node.as_str() {
            let template = self.template_text(text, node, Place::JobStrategy)?;
            return Some(Matrix::Template(Located::new(template, node.span)));
        }
        let entries = named_entries(self.file, node, "`matrix`", self.diagnostics);
        let mut axes = IndexMap::new();
        let mut include = Located::new(MatrixValues::Literal(Vec::new()), node.span);
        let mut exclude = Located::new(MatrixValues::Literal(Vec::new()), node.span);
        for (name, key, value) in entries {
            let values = self.matrix_values(value, name)?;
            match name {
                "include" => include = Located::new(values, value.span),
                "exclude" => exclude = Located::new(values, value.span),
                _ => {
                    if let MatrixValues::Literal(items) = &values
                        && items.is_empty()
                    {
                        self.error(key.span, format!("matrix axis `{name}` has no values"))
                            .hint = Some("an empty axis would leave no job to run".into());
                    }
                    axes.insert(name.to_string(), Located::new(values, value.span));
                }
            }
        }
        if axes.is_empty()
            && matches!(&include.value, MatrixValues::Literal(items) if items.is_empty())
        {
            self.error(
                node.head_span(self.file),
                "the matrix has no axes and no `include`",
            );
        }
        for (what, list) in [("include", &include), ("exclude", &exclude)] {
            if let MatrixValues::Literal(items) = &list.value
                && items.iter().any(|item| !matches!(item, Value::Object(_)))
            {
                self.error(list.span, format!("each `{what}` entry must be a mapping"));
            }
        }
        Some(Matrix::Axes {
            axes,
            include,
            exclude,
        })
    }

    fn matrix_values(&mut self, node: &Node, axis: &str) -> Option<MatrixValues> {
        if let Some(text) = node.as_str() {
            let template = self.template_text(text, node, Place::JobStrategy)?;
            if template.is_literal() {
                self.error(
                    node.span,
                    format!("matrix axis `{axis}` must be a list, found a string"),
                )
                .hint = Some(format!("write `{axis}: [{text}]`"));
                return None;
            }
            return Some(MatrixValues::Template(template));
        }
        let Some(items) = node.as_seq() else {
            self.error(
                node.head_span(self.file),
                format!(
                    "matrix axis `{axis}` must be a list, found {}",
                    node.kind_name()
                ),
            );
            return None;
        };
        let mut values = Vec::with_capacity(items.len());
        for item in items {
            values.push(self.value_checked(item, Place::JobStrategy)?);
        }
        Some(MatrixValues::Literal(values))
    }

    /// Converts a YAML node to a value, checking that the templates in its strings parse.
    fn value_checked(&mut self, node: &Node, place: Place) -> Option<Value> {
        let value = node_to_value(node);
        let mut ok = true;
        visit_strings(node, &mut |text, item| {
            if text.contains("${{") && self.template_text(text, item, place).is_none() {
                ok = false;
            }
        });
        ok.then_some(value)
    }

    fn environment(&mut self, node: &Node) -> Option<EnvironmentRef> {
        if node.as_map().is_none() {
            let name = self.template(node, Place::Job, "`environment`")?;
            return Some(EnvironmentRef { name, url: None });
        }
        let mut reader = self.reader(node, "`environment`")?;
        let name = match reader.get("name") {
            Some(name) => self.template(name, Place::Job, "`environment.name`"),
            None => {
                self.error(node.head_span(self.file), "`environment` needs a `name`");
                None
            }
        };
        let url = reader
            .get("url")
            .and_then(|url| self.template(url, Place::JobOutputs, "`environment.url`"));
        reader.finish(self.diagnostics);
        Some(EnvironmentRef { name: name?, url })
    }

    fn services(&mut self, node: &Node) -> IndexMap<String, Service> {
        let mut services = IndexMap::new();
        for (name, key, value) in named_entries(self.file, node, "`services`", self.diagnostics) {
            let what = format!("service `{name}`");
            let Some(mut reader) = self.reader(value, what.clone()) else {
                continue;
            };
            if let Some((image_key, _)) = reader.get_entry("image") {
                self.error(
                    image_key.span,
                    format!("{what} has an `image`: container services need a container runtime"),
                )
                .hint = Some(
                    "Sorat's services are processes: give `run:` the command that starts it".into(),
                );
            }
            reader.ignore(&["ports", "options", "credentials", "volumes"]);
            let run = match reader.get("run") {
                Some(run) => self.template(run, Place::Job, "`run`"),
                None => {
                    self.error(key.span, format!("{what} needs `run`"));
                    None
                }
            };
            let env = reader
                .get("env")
                .map(|node| self.env(node, Place::Job, "the service's `env`"))
                .unwrap_or_default();
            let working_directory = reader
                .get("working-directory")
                .and_then(|node| self.template(node, Place::Job, "`working-directory`"));
            let ready = reader.get("ready").and_then(|node| self.probe(node, &what));
            reader.finish(self.diagnostics);
            if let Some(run) = run {
                services.insert(
                    name.to_string(),
                    Service {
                        name: name.to_string(),
                        run,
                        env,
                        working_directory,
                        ready,
                    },
                );
            }
        }
        services
    }

    fn probe(&mut self, node: &Node, what: &str) -> Option<ReadinessProbe> {
        let mut reader = self.reader(node, format!("`ready` of {what}"))?;
        let mut checks = Vec::new();
        if let Some(node) = reader.get("tcp") {
            checks.push(
                self.template(node, Place::Job, "`tcp`")
                    .map(ProbeCheck::Tcp),
            );
        }
        if let Some(node) = reader.get("http") {
            checks.push(
                self.template(node, Place::Job, "`http`")
                    .map(ProbeCheck::Http),
            );
        }
        if let Some(node) = reader.get("run") {
            checks.push(
                self.template(node, Place::Job, "`run`")
                    .map(ProbeCheck::Run),
            );
        }
        let interval = reader
            .get("interval")
            .and_then(|node| self.duration(node, "`interval`"))
            .unwrap_or(Duration::from_millis(500));
        let timeout = reader
            .get("timeout")
            .and_then(|node| self.duration(node, "`timeout`"))
            .unwrap_or(Duration::from_secs(60));
        reader.finish(self.diagnostics);
        if checks.len() != 1 {
            self.error(
                node.head_span(self.file),
                format!("`ready` of {what} needs exactly one of `tcp`, `http` or `run`"),
            );
            return None;
        }
        let check = checks.pop().flatten()?;
        Some(ReadinessProbe {
            check,
            interval,
            timeout,
        })
    }

    fn steps(&mut self, node: &Node, job_id: &str) -> Vec<Step> {
        let Some(items) = node.as_seq() else {
            self.error(
                node.head_span(self.file),
                format!("`steps` must be a list, found {}", node.kind_name()),
            );
            return Vec::new();
        };
        if items.is_empty() {
            self.error(node.span, format!("job `{job_id}` has no steps"));
        }
        let mut steps: Vec<Step> = Vec::new();
        let mut first_ids: std::collections::HashMap<String, Span> = Default::default();
        for (index, item) in items.iter().enumerate() {
            if let Some(step) = self.step(index, item, job_id) {
                if let Some(id) = &step.id
                    && let Some(first) = first_ids.get(&id.value).copied().or_else(|| {
                        first_ids.insert(id.value.clone(), id.span);
                        None
                    })
                {
                    let first_line = self.file.line_col(first.start).line;
                    self.error(id.span, format!("duplicate step id `{}`", id.value))
                        .hint = Some(format!("it is first used on line {first_line}"));
                }
                steps.push(step);
            }
        }
        steps
    }

    fn step(&mut self, index: usize, node: &Node, job_id: &str) -> Option<Step> {
        let what = format!("step {} of job `{job_id}`", index + 1);
        let mut reader = self.reader(node, what.clone())?;
        let id = reader.get("id").and_then(|id_node| {
            let text = expect_text(self.file, id_node, "`id`", self.diagnostics)?;
            if !is_valid_id(text) {
                self.error(id_node.span, format!("`{text}` is not a valid step id"))
                    .hint = Some(
                    "a step id starts with a letter or `_` and holds only letters, digits, `-` and `_`"
                        .into(),
                );
                return None;
            }
            Some(Located::new(text.to_string(), id_node.span))
        });
        let name = reader
            .get("name")
            .and_then(|node| self.template(node, Place::Step, "`name`"));
        let condition = reader
            .get("if")
            .and_then(|node| self.condition(node, Place::StepIf));
        let env = reader
            .get("env")
            .map(|node| self.env(node, Place::Step, "the step's `env`"))
            .unwrap_or_default();
        let continue_on_error = reader
            .get("continue-on-error")
            .and_then(|node| self.bool_or_template(node, Place::Step, "`continue-on-error`"));
        let timeout = self.timeout(&mut reader, Place::Step);
        let retry = reader.get("retry").and_then(|node| self.retry(node));
        let run = reader.get_entry("run");
        let uses = reader.get_entry("uses");
        let shell = reader.get_entry("shell");
        let working_directory = reader.get_entry("working-directory");
        let with = reader.get_entry("with");
        let action = match (run, uses) {
            (Some((run_key, _)), Some((uses_key, _))) => {
                let span = run_key.span.min_span(uses_key.span);
                self.error(span, format!("{what} has both `run` and `uses`"))
                    .hint = Some("split it into two steps".into());
                None
            }
            (None, None) => {
                self.error(
                    node.head_span(self.file),
                    format!("{what} has neither `run` nor `uses`"),
                );
                None
            }
            (Some((_, script_node)), None) => {
                if let Some((with_key, _)) = with {
                    self.error(
                        with_key.span,
                        "`with` belongs to `uses` steps, not `run` steps",
                    );
                }
                let script = self.template(script_node, Place::Step, "`run`");
                let shell = shell.and_then(|(_, node)| self.shell(node));
                let working_directory = working_directory
                    .and_then(|(_, node)| self.template(node, Place::Step, "`working-directory`"));
                script.map(|script| StepAction::Run {
                    script,
                    script_source: script_node.scalar_text().unwrap_or("").to_string(),
                    shell,
                    working_directory,
                })
            }
            (None, Some((_, uses_node))) => {
                for (key, _) in [shell, working_directory].into_iter().flatten() {
                    let key_text = key.scalar_text().unwrap_or("");
                    self.error(
                        key.span,
                        format!("`{key_text}` belongs to `run` steps, not `uses` steps"),
                    );
                }
                self.uses(uses_node, with.map(|(_, node)| node))
            }
        };
        reader.finish(self.diagnostics);
        Some(Step {
            index,
            id,
            name,
            condition,
            env,
            continue_on_error,
            timeout,
            retry,
            action: action?,
            span: node.head_span(self.file),
        })
    }

    fn uses(&mut self, uses_node: &Node, with_node: Option<&Node>) -> Option<StepAction> {
        let written = expect_text(self.file, uses_node, "`uses`", self.diagnostics)?;
        let Some(builtin) = Builtin::from_uses(written) else {
            let names: Vec<&str> = Builtin::ALL.iter().map(|(_, name)| *name).collect();
            let bare = written
                .split('@')
                .next()
                .unwrap_or(written)
                .trim_start_matches("actions/");
            let hint = match suggest::closest(bare, names.iter().copied()) {
                Some(candidate) => format!(
                    "did you mean `{candidate}`? The built-in steps are {}; `actions/checkout@*`, `actions/cache@*`, `actions/upload-artifact@*` and `actions/download-artifact@*` answer too",
                    names.join(", ")
                ),
                None => format!(
                    "the built-in steps are {}; `actions/checkout@*`, `actions/cache@*`, `actions/upload-artifact@*` and `actions/download-artifact@*` answer too; anything else can be a `run` step",
                    names.join(", ")
                ),
            };
            self.error(uses_node.span, format!("unknown step `uses: {written}`"))
                .hint = Some(hint);
            return None;
        };
        let mut with = IndexMap::new();
        if let Some(with_node) = with_node {
            for (name, key, value) in
                named_entries(self.file, with_node, "`with`", self.diagnostics)
            {
                let known = builtin.inputs();
                if !known.iter().any(|(input, _)| *input == name) {
                    let candidates = known.iter().map(|(input, _)| *input);
                    let hint = match suggest::closest(name, candidates) {
                        Some(candidate) => format!("did you mean `{candidate}`?"),
                        None => format!(
                            "`{}` takes {}",
                            builtin.name(),
                            known
                                .iter()
                                .map(|(input, _)| format!("`{input}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    };
                    self.error(
                        key.span,
                        format!("`{}` has no input `{name}`", builtin.name()),
                    )
                    .hint = Some(hint);
                    continue;
                }
                let text = if value.is_null() {
                    Some("")
                } else {
                    expect_text(self.file, value, "an input value", self.diagnostics)
                };
                if let Some(text) = text
                    && let Some(template) = self.template_text(text, value, Place::Step)
                {
                    with.insert(name.to_string(), Located::new(template, value.span));
                }
            }
        }
        for (input, required) in builtin.inputs() {
            if *required && !with.contains_key(*input) {
                let span = with_node.map_or(uses_node.span, |node| node.head_span(self.file));
                self.error(
                    span,
                    format!("`{}` needs the input `{input}`", builtin.name()),
                );
            }
        }
        Some(StepAction::Uses {
            builtin,
            written: Located::new(written.to_string(), uses_node.span),
            with,
        })
    }

    fn shell(&mut self, node: &Node) -> Option<String> {
        let text = expect_text(self.file, node, "`shell`", self.diagnostics)?;
        let known = ["bash", "sh", "python", "pwsh", "powershell"];
        if !known.contains(&text) && !text.contains("{0}") {
            self.error(node.span, format!("unknown shell `{text}`"))
                .hint = Some(
                "use bash, sh, python or pwsh, or a command with `{0}` for the script's path (e.g. `perl {0}`)"
                    .into(),
            );
            return None;
        }
        Some(text.to_string())
    }

    /// `timeout` (a duration) or `timeout-minutes` (a number or expression), not both.
    fn timeout(&mut self, reader: &mut MapReader<'_>, place: Place) -> Option<Timeout> {
        let duration = reader.get_entry("timeout");
        let minutes = reader.get_entry("timeout-minutes");
        if let (Some(_), Some((minutes_key, _))) = (duration, minutes) {
            self.error(
                minutes_key.span,
                "`timeout` and `timeout-minutes` cannot both be set",
            );
            return None;
        }
        if let Some((_, node)) = duration {
            return self.duration(node, "`timeout`").map(Timeout::Fixed);
        }
        let (_, node) = minutes?;
        if let Some(minutes) = node.as_f64() {
            let Some(duration) = duration::from_minutes(minutes) else {
                let problem = if minutes > 0.0 {
                    "too large"
                } else {
                    "not more than 0"
                };
                self.error(
                    node.span,
                    format!("`timeout-minutes` must be a positive number of minutes; {minutes} is {problem}"),
                );
                return None;
            };
            return Some(Timeout::Fixed(duration));
        }
        let text = expect_text(self.file, node, "`timeout-minutes`", self.diagnostics)?;
        let template = self.template_text(text, node, place)?;
        if template.is_literal() {
            self.error(
                node.span,
                format!("`timeout-minutes` must be a number, found `{text}`"),
            )
            .hint = Some("for a duration string use `timeout:` (e.g. `timeout: 90s`)".into());
            return None;
        }
        Some(Timeout::Minutes(Located::new(template, node.span)))
    }

    fn duration(&mut self, node: &Node, what: &str) -> Option<Duration> {
        let text = expect_text(self.file, node, what, self.diagnostics)?;
        match duration::parse_duration(text) {
            Ok(duration) => Some(duration),
            Err(error) => {
                let message = if node.as_f64().is_some() {
                    format!("{what} needs a unit: `{text}` could be `{text}s` or `{text}m`")
                } else {
                    format!("{what}: {error}")
                };
                self.error(node.span, message);
                None
            }
        }
    }

    fn retry(&mut self, node: &Node) -> Option<Retry> {
        if let Some(count) = node.as_i64() {
            return self.retry_count(count, node).map(|count| Retry {
                count,
                exit_codes: Vec::new(),
                delay: Duration::ZERO,
            });
        }
        let mut reader = self.reader(node, "`retry`")?;
        let count = match reader.get("count") {
            Some(count_node) => match count_node.as_i64() {
                Some(count) => self.retry_count(count, count_node),
                None => {
                    self.error(count_node.span, "`retry.count` must be a whole number");
                    None
                }
            },
            None => {
                self.error(node.head_span(self.file), "`retry` needs a `count`");
                None
            }
        };
        let exit_codes = reader
            .get("exit-codes")
            .map(|codes| {
                let items: Vec<&Node> = match codes.as_seq() {
                    Some(items) => items.iter().collect(),
                    None => vec![codes],
                };
                items
                    .into_iter()
                    .filter_map(|item| match item.as_i64() {
                        Some(code) if (0..=255).contains(&code) => Some(code as i32),
                        _ => {
                            self.error(item.span, "an exit code is a whole number from 0 to 255");
                            None
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let delay = reader
            .get("delay")
            .and_then(|node| self.duration(node, "`retry.delay`"))
            .unwrap_or(Duration::ZERO);
        reader.finish(self.diagnostics);
        Some(Retry {
            count: count?,
            exit_codes,
            delay,
        })
    }

    fn retry_count(&mut self, count: i64, node: &Node) -> Option<u32> {
        if !(0..=100).contains(&count) {
            self.error(node.span, "`retry` count must be from 0 to 100");
            return None;
        }
        Some(count as u32)
    }

    fn bool_literal(&mut self, node: &Node, what: &str) -> Option<bool> {
        match node.as_bool() {
            Some(value) => Some(value),
            None => {
                self.error(
                    node.span,
                    format!("{what} must be true or false, found {}", node.kind_name()),
                );
                None
            }
        }
    }

    fn bool_or_template(
        &mut self,
        node: &Node,
        place: Place,
        what: &str,
    ) -> Option<BoolOrTemplate> {
        if let Some(value) = node.as_bool() {
            return Some(BoolOrTemplate::Literal(value));
        }
        let text = expect_text(self.file, node, what, self.diagnostics)?;
        let template = self.template_text(text, node, place)?;
        if template.is_literal() {
            self.error(
                node.span,
                format!("{what} must be true, false or an expression"),
            );
            return None;
        }
        Some(BoolOrTemplate::Template(Located::new(template, node.span)))
    }

    fn condition(&mut self, node: &Node, place: Place) -> Option<Condition> {
        let text = expect_text(self.file, node, "`if`", self.diagnostics)?;
        let trimmed = text.trim();
        let names = contexts::names(place);
        if let Some(inner) = whole_expression(trimmed) {
            return match sorat_expr::parse(inner, names) {
                Ok(expr) => Some(Condition {
                    kind: ConditionKind::Expr(expr),
                    text: text.to_string(),
                    span: node.span,
                }),
                Err(error) => {
                    let inner_start = text.find(inner).unwrap_or(0);
                    let span = self.span_in_scalar(node, text, inner_start + error.byte_offset());
                    self.error(span, format!("invalid expression in `if`: {error}"));
                    None
                }
            };
        }
        if text.contains("${{") {
            let template = self.template_text(text, node, place)?;
            self.warning(
                node.span,
                "this `if:` mixes text with `${{ }}`, so it is a non-empty string and always true",
            )
            .hint = Some(format!(
                "write the whole condition as one expression: `if: {}`",
                text.replace("${{", "")
                    .replace("}}", "")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
            return Some(Condition {
                kind: ConditionKind::Mixed(template),
                text: text.to_string(),
                span: node.span,
            });
        }
        match sorat_expr::parse(trimmed, names) {
            Ok(expr) => Some(Condition {
                kind: ConditionKind::Expr(expr),
                text: text.to_string(),
                span: node.span,
            }),
            Err(error) => {
                let leading = text.len() - text.trim_start().len();
                let span = self.span_in_scalar(node, text, leading + error.byte_offset());
                self.error(span, format!("invalid expression in `if`: {error}"));
                None
            }
        }
    }

    fn template(&mut self, node: &Node, place: Place, what: &str) -> Option<Located<Template>> {
        let text = expect_text(self.file, node, what, self.diagnostics)?;
        self.template_text(text, node, place)
            .map(|template| Located::new(template, node.span))
    }

    /// Parses `text` (the content of `node`) as a template, reporting errors at the failing
    /// `${{` in the file.
    fn template_text(&mut self, text: &str, node: &Node, place: Place) -> Option<Template> {
        match Template::parse(text, contexts::names(place)) {
            Ok(template) => Some(template),
            Err(error) => {
                let span = self.span_in_scalar(node, text, error.error_offset());
                self.error(span, format!("invalid expression: {error}"));
                None
            }
        }
    }

    /// The span in the file of byte `offset` of a scalar's text. Expressions are written
    /// without escapes, so the text from the n-th `${{` on reads the same in the source; the
    /// offset is carried over from there. Where that fails, the whole scalar is the place.
    fn span_in_scalar(&self, node: &Node, text: &str, offset: usize) -> Span {
        let source = self.file.slice(node.span);
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let anchor = text[..offset].rfind("${{");
        let (text_anchor, occurrence) = match anchor {
            Some(index) => (index, text[..index].matches("${{").count()),
            None => (0, usize::MAX),
        };
        let source_anchor = if occurrence == usize::MAX {
            // No `${{` before the offset (a bare `if:` expression): the text's first line
            // is where it starts in the source.
            source.find(text.lines().next().unwrap_or(""))
        } else {
            source
                .match_indices("${{")
                .nth(occurrence)
                .map(|(index, _)| index)
        };
        match source_anchor {
            Some(index) => {
                let start = node.span.start + index + (offset - text_anchor);
                Span::new(start, (start + 1).min(node.span.end.max(start + 1)))
            }
            None => node.span,
        }
    }

    /// Every `needs` names a job, and the jobs form no cycle.
    fn check_needs(&mut self, jobs: &IndexMap<String, Job>) {
        for job in jobs.values() {
            for need in &job.needs {
                if need.value == job.id {
                    self.error(need.span, format!("job `{}` needs itself", job.id));
                } else if !jobs.contains_key(&need.value) {
                    let hint = match suggest::closest(&need.value, jobs.keys().map(String::as_str))
                    {
                        Some(candidate) => format!("did you mean `{candidate}`?"),
                        None => format!(
                            "the jobs are {}",
                            jobs.keys()
                                .map(|id| format!("`{id}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    };
                    self.error(
                        need.span,
                        format!(
                            "job `{}` needs `{}`, which is not a job",
                            job.id, need.value
                        ),
                    )
                    .hint = Some(hint);
                }
            }
        }
        for cycle in find_cycles(jobs) {
            let first = &jobs[&cycle[0]];
            let path = cycle
                .iter()
                .chain(std::iter::once(&cycle[0]))
                .map(|id| format!("`{id}`"))
                .collect::<Vec<_>>()
                .join(" → ");
            let span = first
                .needs
                .iter()
                .find(|need| {
                    cycle.get(1).is_some_and(|next| *next == need.value) || cycle.len() == 1
                })
                .map_or(first.id_span, |need| need.span);
            self.error(span, format!("the jobs' `needs` form a cycle: {path}"))
                .hint =
                Some("a job cannot wait, directly or not, for a job that waits for it".into());
        }
    }
}

trait SpanExt {
    fn min_span(self, other: Span) -> Span;
}

impl SpanExt for Span {
    fn min_span(self, other: Span) -> Span {
        if self.start <= other.start {
            self
        } else {
            other
        }
    }
}

/// The expression inside a text that is one `${{ ... }}` and nothing else.
fn whole_expression(text: &str) -> Option<&str> {
    let inner = text.strip_prefix("${{")?.strip_suffix("}}")?;
    // `${{ a }} == ${{ b }}` starts and ends right but is two expressions.
    if inner.contains("${{") {
        return None;
    }
    Some(inner)
}

/// Each cycle in the `needs` graph once, as the list of job ids along it (in `needs` order:
/// each job needs the next one).
fn find_cycles(jobs: &IndexMap<String, Job>) -> Vec<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Color {
        White,
        Grey,
        Black,
    }
    fn visit(
        index: usize,
        jobs: &IndexMap<String, Job>,
        colors: &mut [Color],
        path: &mut Vec<usize>,
        cycles: &mut Vec<Vec<String>>,
    ) {
        colors[index] = Color::Grey;
        path.push(index);
        for need in &jobs[index].needs {
            let Some(next) = jobs.get_index_of(&need.value) else {
                continue;
            };
            if next == index {
                continue; // reported as "needs itself"
            }
            match colors[next] {
                Color::White => visit(next, jobs, colors, path, cycles),
                Color::Grey => {
                    if let Some(start) = path.iter().position(|&p| p == next) {
                        cycles.push(
                            path[start..]
                                .iter()
                                .map(|&p| {
                                    jobs.get_index(p)
                                        .map_or(String::new(), |(id, _)| id.clone())
                                })
                                .collect(),
                        );
                    }
                }
                Color::Black => {}
            }
        }
        path.pop();
        colors[index] = Color::Black;
    }
    let mut colors = vec![Color::White; jobs.len()];
    let mut cycles = Vec::new();
    for index in 0..jobs.len() {
        if colors[index] == Color::White {
            visit(index, jobs, &mut colors, &mut Vec::new(), &mut cycles);
        }
    }
    cycles
}

/// Compiles a GitHub filter glob: `*` stays within a path segment, `**` crosses them.
fn compile_filter_glob(pattern: &str, _is_path: bool) -> Result<globset::GlobMatcher, String> {
    if pattern.is_empty() {
        return Err("it is empty".into());
    }
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map(|glob| glob.compile_matcher())
        .map_err(|error| error.kind().to_string())
}

/// Parses a five-field cron expression (GitHub's form; no seconds field).
pub fn parse_cron(expression: &str) -> Result<croner::Cron, String> {
    let fields = expression.split_whitespace().count();
    let is_nickname = expression.trim_start().starts_with('@');
    if fields != 5 && !is_nickname {
        return Err(format!("it has {fields} fields, not 5"));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .build()
        .parse(expression)
        .map_err(|error| error.to_string())
}

/// Checks and converts a manual input's text to its typed value.
pub fn coerce_input(kind: &InputKind, text: &str) -> Result<Value, String> {
    match kind {
        InputKind::String | InputKind::Environment => Ok(Value::String(text.to_string())),
        InputKind::Boolean => match text {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!("must be true or false, not `{text}`")),
        },
        InputKind::Number => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|number| number.is_finite())
            .map(Value::Number)
            .ok_or_else(|| format!("must be a number, not `{text}`")),
        InputKind::Choice(options) => {
            if options.iter().any(|option| option == text) {
                Ok(Value::String(text.to_string()))
            } else {
                Err(format!(
                    "must be one of {}, not `{text}`",
                    options
                        .iter()
                        .map(|option| format!("`{option}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        }
    }
}

/// A YAML node as an expression value: scalars by their YAML type.
pub fn node_to_value(node: &Node) -> Value {
    match &node.value {
        yaml::Value::Scalar(scalar) => match scalar.kind {
            yaml::ScalarKind::Null => Value::Null,
            yaml::ScalarKind::Bool(value) => Value::Bool(value),
            yaml::ScalarKind::Int(value) => Value::Number(value as f64),
            yaml::ScalarKind::Float(value) => Value::Number(value),
            yaml::ScalarKind::String => Value::String(scalar.text.clone()),
        },
        yaml::Value::Seq(items) => Value::Array(items.iter().map(node_to_value).collect()),
        yaml::Value::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(key, value)| {
                    (
                        key.scalar_text().unwrap_or_default().to_string(),
                        node_to_value(value),
                    )
                })
                .collect(),
        ),
    }
}

fn visit_strings<'n>(node: &'n Node, visit: &mut impl FnMut(&'n str, &'n Node)) {
    match &node.value {
        yaml::Value::Scalar(_) => {
            if let Some(text) = node.as_str() {
                visit(text, node);
            }
        }
        yaml::Value::Seq(items) => items.iter().for_each(|item| visit_strings(item, visit)),
        yaml::Value::Map(entries) => entries
            .iter()
            .for_each(|(_, value)| visit_strings(value, visit)),
    }
}

//! JUnit XML test reports, read into a summary that records and terminals can show.
//!
//! Accepts the shapes test tools actually write: a `<testsuites>` root or a lone
//! `<testsuite>`, suites nested in suites, `<failure>`, `<error>` and `<skipped>` children,
//! and attributes or text for the failure message.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// How much of a failure's text is kept in the record.
const MAX_DETAILS: usize = 4096;
/// How many failures are kept in the record; the counts stay exact beyond it.
const MAX_FAILURES: usize = 200;

/// Test results: counts and the failures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TestReport {
    /// Test cases in all.
    pub total: u64,
    /// Passed cases.
    pub passed: u64,
    /// Failed cases (`<failure>` or `<error>`).
    pub failed: u64,
    /// Skipped cases.
    pub skipped: u64,
    /// The failures, up to a limit.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub failures: Vec<TestFailure>,
}

/// One failed test case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestFailure {
    /// The suite's name.
    pub suite: String,
    /// The case's `classname`.
    pub classname: String,
    /// The case's name.
    pub name: String,
    /// The failure's message.
    pub message: String,
    /// The failure's text (a stack trace), shortened.
    pub details: String,
    /// The report file it came from.
    pub file: String,
}

/// Why a report could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JunitError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not well-formed XML.
    #[error("{path}:{line}:{col}: not a JUnit XML report: {message}")]
    Xml {
        /// The file.
        path: String,
        /// 1-based line.
        line: u32,
        /// 1-based column.
        col: u32,
        /// The XML error.
        message: String,
    },
    /// Well-formed XML, but its root is neither `testsuites` nor `testsuite`.
    #[error(
        "{path}: not a JUnit XML report: the root element is <{root}>, not <testsuites> or <testsuite>"
    )]
    NotJunit {
        /// The file.
        path: String,
        /// The root element's name.
        root: String,
    },
}

impl TestReport {
    /// Adds another report's results to this one.
    pub fn merge(&mut self, other: &TestReport) {
        self.total += other.total;
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
        let room = MAX_FAILURES.saturating_sub(self.failures.len());
        self.failures
            .extend(other.failures.iter().take(room).cloned());
    }

    /// Whether any test failed.
    pub fn has_failures(&self) -> bool {
        self.failed > 0
    }

    /// Whether there are no results at all.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

/// Reads one JUnit XML file.
pub fn read_file(path: &Path) -> Result<TestReport, JunitError> {
    let text = std::fs::read_to_string(path).map_err(|source| JunitError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// Parses JUnit XML text; `path` names the file in messages and failures.
pub fn parse(text: &str, path: &str) -> Result<TestReport, JunitError> {
    let document = roxmltree::Document::parse(text).map_err(|error| {
        let position = error.pos();
        JunitError::Xml {
            path: path.to_string(),
            line: position.row,
            col: position.col,
            message: error.to_string(),
        }
    })?;
    let root = document.root_element();
    let root_name = root.tag_name().name();
    if root_name != "testsuites" && root_name != "testsuite" {
        return Err(JunitError::NotJunit {
            path: path.to_string(),
            root: root_name.to_string(),
        });
    }
    let mut report = TestReport::default();
    collect(root, path, &mut report);
    Ok(report)
}

/// Walks suites and cases without recursion: a report may nest suites thousands deep, and
/// the step reads reports on a thread with a small stack.
fn collect(root: roxmltree::Node<'_, '_>, path: &str, report: &mut TestReport) {
    let mut stack = vec![(root, String::new())];
    while let Some((node, inherited)) = stack.pop() {
        let suite = if node.has_tag_name("testsuite") {
            node.attribute("name").map_or(inherited, str::to_string)
        } else {
            inherited
        };
        // A suite's own cases first, in document order; then its nested suites, pushed in
        // reverse so that they are taken in document order too.
        let mut nested = Vec::new();
        for child in node.children().filter(roxmltree::Node::is_element) {
            match child.tag_name().name() {
                "testsuite" | "testsuites" => nested.push(child),
                "testcase" => case(child, &suite, path, report),
                _ => {}
            }
        }
        for child in nested.into_iter().rev() {
            stack.push((child, suite.clone()));
        }
    }
}

fn case(node: roxmltree::Node<'_, '_>, suite: &str, path: &str, report: &mut TestReport) {
    report.total += 1;
    let failure = node
        .children()
        .find(|child| child.has_tag_name("failure") || child.has_tag_name("error"));
    if let Some(failure) = failure {
        report.failed += 1;
        if report.failures.len() < MAX_FAILURES {
            let text = failure.text().unwrap_or("").trim();
            let message = failure
                .attribute("message")
                .map(str::to_string)
                .unwrap_or_else(|| text.lines().next().unwrap_or("").to_string());
            report.failures.push(TestFailure {
                suite: suite.to_string(),
                classname: node.attribute("classname").unwrap_or("").to_string(),
                name: node.attribute("name").unwrap_or("").to_string(),
                message,
                details: shorten(text, MAX_DETAILS),
                file: path.to_string(),
            });
        }
    } else if node.children().any(|child| child.has_tag_name("skipped")) {
        report.skipped += 1;
    } else {
        report.passed += 1;
    }
}

fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_suites_cases_failures_and_skips() {
        let xml = r#"<?xml version="1.0"?>
<testsuites>
  <testsuite name="math" tests="4">
    <testcase classname="math.add" name="adds" time="0.1"/>
    <testcase classname="math.add" name="overflows">
      <failure message="expected 3, got 4" type="AssertionError">at add.rs:12
more</failure>
    </testcase>
    <testcase classname="math.div" name="by zero"><error>panic &amp; burn</error></testcase>
    <testcase classname="math.div" name="later"><skipped/></testcase>
  </testsuite>
</testsuites>"#;
        let report = parse(xml, "r.xml").unwrap();
        assert_eq!(
            (report.total, report.passed, report.failed, report.skipped),
            (4, 1, 2, 1)
        );
        assert_eq!(report.failures[0].message, "expected 3, got 4");
        assert_eq!(report.failures[0].suite, "math");
        assert!(report.failures[0].details.contains("add.rs:12"));
        assert_eq!(report.failures[1].message, "panic & burn");
    }

    #[test]
    fn a_lone_testsuite_root_is_fine() {
        let report = parse(
            r#"<testsuite name="s"><testcase name="a"/></testsuite>"#,
            "r.xml",
        )
        .unwrap();
        assert_eq!(report.passed, 1);
    }

    #[test]
    fn malformed_xml_is_located() {
        let error = parse("<testsuites>\n  <testsuite>\n</testsuites>", "bad.xml").unwrap_err();
        let message = error.to_string();
        assert!(message.starts_with("bad.xml:3:"), "{message}");
    }

    #[test]
    fn deeply_nested_suites_do_not_overflow_the_stack() {
        let depth = 20_000;
        let xml = format!(
            "{}<testcase name=\"deep\"/>{}",
            "<testsuite name=\"s\">".repeat(depth),
            "</testsuite>".repeat(depth)
        );
        // A small stack, like the blocking threads that read reports.
        let report = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || parse(&xml, "deep.xml"))
            .unwrap()
            .join()
            .unwrap();
        match report {
            Ok(report) => assert_eq!(report.passed, 1),
            // The XML parser may refuse such depth itself; refusing is fine, crashing is not.
            Err(error) => assert!(error.to_string().contains("deep.xml")),
        }
    }

    #[test]
    fn other_xml_is_refused() {
        let error = parse("<html/>", "page.xml").unwrap_err();
        assert!(error.to_string().contains("<html>"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,300}") {
            let _ = parse(&text, "fuzz.xml");
        }
    }
}

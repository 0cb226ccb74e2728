//! Reading a YAML mapping into a typed structure without losing a single mistake.

use crate::diag::{Diagnostic, Diagnostics};
use crate::source::SourceFile;
use crate::suggest;
use crate::yaml::Node;

/// Reads the keys of one mapping, remembering which were asked for.
///
/// The loader asks for every key it understands with [`MapReader::get`]; [`MapReader::finish`]
/// then reports every other key as unknown, with the closest known key as a hint. Because the
/// list of known keys is whatever was asked, it can never drift from the loader.
pub struct MapReader<'n> {
    file: &'n SourceFile,
    entries: &'n [(Node, Node)],
    used: Vec<bool>,
    asked: Vec<&'static str>,
    what: String,
}

impl<'n> MapReader<'n> {
    /// Starts reading `node`, which should be a mapping described in messages as `what`
    /// ("job `build`"). A null node reads as an empty mapping; anything else is an error and
    /// gives `None`.
    pub fn new(
        file: &'n SourceFile,
        node: &'n Node,
        what: impl Into<String>,
        diagnostics: &mut Diagnostics,
    ) -> Option<MapReader<'n>> {
        let what = what.into();
        let entries: &'n [(Node, Node)] = match node.as_map() {
            Some(entries) => entries,
            None if node.is_null() => &[],
            None => {
                diagnostics.push(Diagnostic::error(
                    file,
                    node.head_span(file),
                    format!("{what} must be a mapping, found {}", node.kind_name()),
                ));
                return None;
            }
        };
        Some(MapReader {
            file,
            entries,
            used: vec![false; entries.len()],
            asked: Vec::new(),
            what,
        })
    }

    /// The value of `key`, marking it as understood. Keys compare exactly (YAML is
    /// case-sensitive, and so are GitHub's keys).
    pub fn get(&mut self, key: &'static str) -> Option<&'n Node> {
        self.get_entry(key).map(|(_, value)| value)
    }

    /// The key node and value of `key`; the key's span is where a message about the key points.
    pub fn get_entry(&mut self, key: &'static str) -> Option<(&'n Node, &'n Node)> {
        self.asked.push(key);
        // The last of duplicate keys wins, as in most YAML loaders; the duplicate itself was
        // already reported by the parser.
        let index = self
            .entries
            .iter()
            .rposition(|(name, _)| name.scalar_text() == Some(key))?;
        for (other, used) in self.entries.iter().zip(self.used.iter_mut()) {
            if other.0.scalar_text() == Some(key) {
                *used = true;
            }
        }
        let (key_node, value) = &self.entries[index];
        Some((key_node, value))
    }

    /// Marks keys as understood without reading them (accepted and ignored on purpose).
    pub fn ignore(&mut self, keys: &[&'static str]) {
        for key in keys {
            self.get(key);
        }
    }

    /// The file being read.
    pub fn file(&self) -> &'n SourceFile {
        self.file
    }

    /// Reports every key that was never asked for.
    pub fn finish(self, diagnostics: &mut Diagnostics) {
        for ((key, _), used) in self.entries.iter().zip(&self.used) {
            if *used {
                continue;
            }
            let Some(name) = key.scalar_text() else {
                diagnostics.push(Diagnostic::error(
                    self.file,
                    key.head_span(self.file),
                    format!(
                        "keys of {} must be names, found {}",
                        self.what,
                        key.kind_name()
                    ),
                ));
                continue;
            };
            let mut diagnostic = Diagnostic::error(
                self.file,
                key.span,
                format!("unknown key `{name}` in {}", self.what),
            );
            let mut known: Vec<&str> = self.asked.clone();
            known.sort_unstable();
            known.dedup();
            diagnostic = match suggest::closest(name, known.iter().copied()) {
                Some(candidate) => diagnostic.with_hint(format!("did you mean `{candidate}`?")),
                None => diagnostic.with_hint(format!("known keys: {}", known.join(", "))),
            };
            diagnostics.push(diagnostic);
        }
    }
}

/// The entries of a mapping whose keys are names chosen by the user (jobs, env variables),
/// each key as text with its node. Non-text keys are reported.
pub fn named_entries<'n>(
    file: &SourceFile,
    node: &'n Node,
    what: &str,
    diagnostics: &mut Diagnostics,
) -> Vec<(&'n str, &'n Node, &'n Node)> {
    let entries = match node.as_map() {
        Some(entries) => entries,
        None if node.is_null() => return Vec::new(),
        None => {
            diagnostics.push(Diagnostic::error(
                file,
                node.head_span(file),
                format!("{what} must be a mapping, found {}", node.kind_name()),
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        match key.scalar_text() {
            Some(name) => out.push((name, key, value)),
            None => diagnostics.push(Diagnostic::error(
                file,
                key.head_span(file),
                format!("keys of {what} must be names, found {}", key.kind_name()),
            )),
        }
    }
    out
}

/// The text of a string-like scalar (numbers and booleans read as written), or an error.
pub fn expect_text<'n>(
    file: &SourceFile,
    node: &'n Node,
    what: &str,
    diagnostics: &mut Diagnostics,
) -> Option<&'n str> {
    match node.scalar_text() {
        Some(text) => Some(text),
        None => {
            diagnostics.push(Diagnostic::error(
                file,
                node.head_span(file),
                format!("{what} must be text, found {}", node.kind_name()),
            ));
            None
        }
    }
}

/// A string, or a sequence of strings, as a list (`branches: main` and `branches: [main]`).
pub fn expect_text_list<'n>(
    file: &SourceFile,
    node: &'n Node,
    what: &str,
    diagnostics: &mut Diagnostics,
) -> Vec<(&'n str, &'n Node)> {
    if let Some(items) = node.as_seq() {
        return items
            .iter()
            .filter_map(|item| expect_text(file, item, what, diagnostics).map(|text| (text, item)))
            .collect();
    }
    if node.is_null() {
        return Vec::new();
    }
    expect_text(file, node, what, diagnostics)
        .map(|text| vec![(text, node)])
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::yaml;

    #[test]
    fn unknown_keys_get_a_did_you_mean() {
        let file = SourceFile::new("p.yaml", "runs-on: x\nneed: [a]\nsteps: []\n");
        let (root, _) = yaml::parse(&file);
        let root = root.unwrap();
        let mut diagnostics = Diagnostics::new();
        let mut reader = MapReader::new(&file, &root, "job `build`", &mut diagnostics).unwrap();
        reader.get("runs-on");
        reader.get("needs");
        reader.get("steps");
        reader.finish(&mut diagnostics);
        let all = diagnostics.into_sorted();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].message, "unknown key `need` in job `build`");
        assert_eq!(all[0].hint.as_deref(), Some("did you mean `needs`?"));
        assert_eq!(all[0].location().unwrap(), "p.yaml:2:1");
    }

    #[test]
    fn a_scalar_where_a_mapping_belongs_is_an_error() {
        let file = SourceFile::new("p.yaml", "just text\n");
        let (root, _) = yaml::parse(&file);
        let mut diagnostics = Diagnostics::new();
        assert!(MapReader::new(&file, &root.unwrap(), "the pipeline", &mut diagnostics).is_none());
        assert!(diagnostics.has_errors());
    }
}

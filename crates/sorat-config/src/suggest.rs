//! "Did you mean …?" for misspelt keys and names.

/// The candidate closest to `word`, when it is close enough to be a likely typo.
///
/// Case differences are free (`Needs` → `needs`); otherwise the Jaro–Winkler similarity must
/// reach 0.8, or the edit distance be at most a third of a word of four or more characters.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lowered = word.to_lowercase();
    let mut best: Option<(&str, f64)> = None;
    for candidate in candidates {
        if candidate.to_lowercase() == lowered {
            return Some(candidate);
        }
        let similarity = strsim::jaro_winkler(&lowered, &candidate.to_lowercase());
        let distance = strsim::levenshtein(&lowered, &candidate.to_lowercase());
        let length = word.chars().count();
        // One edit in three characters is a typo; in one or two characters it is a different
        // word (`c` is not a misspelt `a`).
        let close_enough = similarity >= 0.8 || (length >= 4 && distance * 3 <= length);
        if close_enough && best.is_none_or(|(_, score)| similarity > score) {
            best = Some((candidate, similarity));
        }
    }
    best.map(|(candidate, _)| candidate)
}

#[cfg(test)]
mod tests {
    use super::closest;

    #[test]
    fn finds_typos_and_ignores_strangers() {
        let keys = ["needs", "steps", "runs-on", "timeout-minutes", "env"];
        assert_eq!(closest("need", keys), Some("needs"));
        assert_eq!(closest("runs_on", keys), Some("runs-on"));
        assert_eq!(closest("timeout-minute", keys), Some("timeout-minutes"));
        assert_eq!(closest("Steps", keys), Some("steps"));
        assert_eq!(closest("banana", keys), None);
        assert_eq!(closest("c", ["a", "b"]), None);
    }
}

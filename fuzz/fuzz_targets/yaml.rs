//! `sorat_config::yaml::parse`: any bytes become a located tree and diagnostics, never a
//! panic; every node and diagnostic points inside the text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sorat_config::{SourceFile, yaml};
use sorat_fuzz::{check_diagnostics, check_node};

fuzz_target!(|data: &[u8]| {
    // Invalid UTF-8 never reaches the parser (the reader refuses it), but a lossy copy
    // keeps the fuzzer's byte-level mutations useful.
    let file = SourceFile::new("fuzz.yaml", String::from_utf8_lossy(data));
    let (root, diagnostics) = yaml::parse(&file);
    check_diagnostics(diagnostics.iter());
    if let Some(root) = root {
        check_node(&file, &root);
    }
});

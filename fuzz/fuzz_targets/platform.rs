//! `sorat_config::platform::load`: a whole `sorat.yaml` (server, projects, environments with
//! local and SSH targets, canary steps, analyses with PromQL and conditions, bake, approval),
//! read into a config and diagnostics, never a panic; every diagnostic can be located and
//! printed, and its span lies within the text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sorat_config::SourceFile;
use sorat_fuzz::check_diagnostics;

fuzz_target!(|data: &[u8]| {
    let file = SourceFile::new("sorat.yaml", String::from_utf8_lossy(data));
    let (_config, diagnostics) = sorat_config::platform::load(&file);
    check_diagnostics(diagnostics.iter());
    check_diagnostics(diagnostics.into_sorted().iter());
});

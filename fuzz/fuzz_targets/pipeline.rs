//! `sorat_pipeline::load::load`: a whole pipeline file, read into a pipeline and
//! diagnostics, never a panic; every diagnostic can be located and printed, and its span
//! lies within the text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sorat_config::SourceFile;
use sorat_fuzz::check_diagnostics;

fuzz_target!(|data: &[u8]| {
    let file = SourceFile::new(".sorat/pipeline.yaml", String::from_utf8_lossy(data));
    let (pipeline, diagnostics) = sorat_pipeline::load::load(&file);
    check_diagnostics(diagnostics.iter());
    // The loader's contract: a pipeline comes back exactly when there is no error, so
    // that `sorat run` never stops with "0 errors; nothing ran".
    assert_eq!(
        pipeline.is_some(),
        !diagnostics.has_errors(),
        "a pipeline must come back exactly when there is no error",
    );
    check_diagnostics(diagnostics.into_sorted().iter());
});

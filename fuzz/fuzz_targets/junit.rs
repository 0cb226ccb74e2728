//! `sorat_pipeline::junit::parse`: any text is a test report or an error, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match sorat_pipeline::junit::parse(&text, "f.xml") {
        Ok(report) => {
            // Every case counts once: passed, failed or skipped.
            assert_eq!(
                report.passed + report.failed + report.skipped,
                report.total,
                "the counts do not add up",
            );
            let _ = (report.has_failures(), report.is_empty());
            let mut merged = report.clone();
            merged.merge(&report);
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
});

//! Cron schedules in time zones, with concrete instants around Berlin's 2025 clock changes
//! (30 March 02:00 CET → 03:00 CEST; 26 October 03:00 CEST → 02:00 CET).

#![allow(clippy::unwrap_used)]

use jiff::Timestamp;
use sorat_config::source::SourceFile;
use sorat_trigger::schedule::{Schedule, ScheduleError};

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

/// The next `count` firings after `start`.
fn chain(schedule: &Schedule, start: &str, count: usize) -> Vec<String> {
    let mut fires = Vec::new();
    let mut cursor = at(start);
    for _ in 0..count {
        cursor = schedule.next_after(cursor).unwrap();
        fires.push(cursor.to_string());
    }
    fires
}

#[test]
fn utc_is_the_default() {
    let schedule = Schedule::new("0 3 * * *", None).unwrap();
    assert_eq!(schedule.time_zone_name(), "UTC");
    assert_eq!(schedule.expression(), "0 3 * * *");
    assert_eq!(
        chain(&schedule, "2025-01-01T02:59:59Z", 2),
        ["2025-01-01T03:00:00Z", "2025-01-02T03:00:00Z"]
    );
    // Strictly after: a firing instant is not its own next.
    assert_eq!(
        schedule
            .next_after(at("2025-01-01T03:00:00Z"))
            .unwrap()
            .to_string(),
        "2025-01-02T03:00:00Z"
    );
    // Sub-seconds past a firing do not fire it again.
    assert_eq!(
        schedule
            .next_after(at("2025-01-01T03:00:00.5Z"))
            .unwrap()
            .to_string(),
        "2025-01-02T03:00:00Z"
    );
}

#[test]
fn weekdays_steps_and_nicknames() {
    let weekdays = Schedule::new("30 9 * * 1-5", None).unwrap();
    // 2025-01-03 is a Friday: next is Monday the 6th.
    assert_eq!(
        chain(&weekdays, "2025-01-03T10:00:00Z", 1),
        ["2025-01-06T09:30:00Z"]
    );
    let every_quarter = Schedule::new("*/15 * * * *", None).unwrap();
    assert_eq!(
        chain(&every_quarter, "2025-01-01T00:07:00Z", 3),
        [
            "2025-01-01T00:15:00Z",
            "2025-01-01T00:30:00Z",
            "2025-01-01T00:45:00Z"
        ]
    );
    let hourly = Schedule::new("@hourly", None).unwrap();
    assert_eq!(
        chain(&hourly, "2025-01-01T00:07:00Z", 1),
        ["2025-01-01T01:00:00Z"]
    );
    let daily = Schedule::new("@daily", Some("Europe/Berlin")).unwrap();
    // Midnight in Berlin in winter is 23:00 UTC the day before.
    assert_eq!(
        chain(&daily, "2025-01-01T12:00:00Z", 1),
        ["2025-01-01T23:00:00Z"]
    );
}

#[test]
fn the_zone_s_wall_clock_decides_in_winter_and_summer() {
    let schedule = Schedule::new("0 9 * * *", Some("Europe/Berlin")).unwrap();
    assert_eq!(
        chain(&schedule, "2025-01-15T00:00:00Z", 1),
        ["2025-01-15T08:00:00Z"]
    );
    assert_eq!(
        chain(&schedule, "2025-07-15T00:00:00Z", 1),
        ["2025-07-15T07:00:00Z"]
    );
}

#[test]
fn berlin_spring_forward_fixed_time_in_the_gap_runs_after_the_gap() {
    // 02:30 does not exist on 30 March 2025: the run is at 03:00 CEST (01:00 UTC), once,
    // and the next day is back to 02:30 CEST (00:30 UTC).
    let schedule = Schedule::new("30 2 * * *", Some("Europe/Berlin")).unwrap();
    assert_eq!(
        chain(&schedule, "2025-03-29T12:00:00Z", 2),
        ["2025-03-30T01:00:00Z", "2025-03-31T00:30:00Z"]
    );
}

#[test]
fn berlin_spring_forward_fixed_time_outside_the_gap_keeps_its_wall_clock() {
    // 01:30 CET (00:30 UTC) before the change, 03:30 CEST (01:30 UTC) after it: both exist.
    let early = Schedule::new("30 1 * * *", Some("Europe/Berlin")).unwrap();
    assert_eq!(
        chain(&early, "2025-03-29T12:00:00Z", 1),
        ["2025-03-30T00:30:00Z"]
    );
    let late = Schedule::new("30 3 * * *", Some("Europe/Berlin")).unwrap();
    assert_eq!(
        chain(&late, "2025-03-29T12:00:00Z", 1),
        ["2025-03-30T01:30:00Z"]
    );
}

#[test]
fn berlin_spring_forward_interval_skips_the_missing_hour() {
    let schedule = Schedule::new("*/30 * * * *", Some("Europe/Berlin")).unwrap();
    // 01:00 CET, 01:30 CET, then 03:00 CEST: only 30 minutes pass between the last two.
    assert_eq!(
        chain(&schedule, "2025-03-29T23:59:00Z", 3),
        [
            "2025-03-30T00:00:00Z",
            "2025-03-30T00:30:00Z",
            "2025-03-30T01:00:00Z"
        ]
    );
}

#[test]
fn berlin_fall_back_fixed_time_runs_once_at_the_first_instant() {
    // 02:30 happens twice on 26 October 2025: at 00:30 UTC (CEST) and 01:30 UTC (CET). The
    // job runs at the first only; the next run is 02:30 CET on the 27th (01:30 UTC).
    let schedule = Schedule::new("30 2 * * *", Some("Europe/Berlin")).unwrap();
    assert_eq!(
        chain(&schedule, "2025-10-25T12:00:00Z", 2),
        ["2025-10-26T00:30:00Z", "2025-10-27T01:30:00Z"]
    );
}

#[test]
fn berlin_fall_back_interval_runs_in_both_halves_of_the_repeated_hour() {
    let schedule = Schedule::new("0,30 * * * *", Some("Europe/Berlin")).unwrap();
    assert_eq!(
        chain(&schedule, "2025-10-25T23:45:00Z", 5),
        [
            "2025-10-26T00:00:00Z", // 02:00 CEST
            "2025-10-26T00:30:00Z", // 02:30 CEST
            "2025-10-26T01:00:00Z", // 02:00 CET
            "2025-10-26T01:30:00Z", // 02:30 CET
            "2025-10-26T02:00:00Z", // 03:00 CET
        ]
    );
}

#[test]
fn fires_between_lists_what_a_sleeping_scheduler_missed() {
    let schedule = Schedule::new("0 * * * *", None).unwrap();
    let fires = schedule.fires_between(at("2025-01-01T00:30:00Z"), at("2025-01-01T03:00:00Z"), 10);
    let fires: Vec<String> = fires.iter().map(ToString::to_string).collect();
    assert_eq!(
        fires,
        [
            "2025-01-01T01:00:00Z",
            "2025-01-01T02:00:00Z",
            "2025-01-01T03:00:00Z"
        ]
    );
    assert_eq!(
        schedule
            .fires_between(at("2025-01-01T00:30:00Z"), at("2025-01-02T00:00:00Z"), 2)
            .len(),
        2
    );
}

#[test]
fn impossible_dates_never_fire() {
    let schedule = Schedule::new("0 0 30 2 *", None).unwrap();
    assert_eq!(schedule.next_after(at("2025-01-01T00:00:00Z")), None);
}

#[test]
fn bad_expressions_and_zones_are_errors() {
    let error = Schedule::new("0 3 * *", None).unwrap_err();
    assert!(matches!(&error, ScheduleError::Cron { expression, .. } if expression == "0 3 * *"));
    assert!(error.to_string().contains("4 fields"), "{error}");
    // Seconds are not GitHub's form.
    assert!(Schedule::new("0 0 3 * * *", None).is_err());
    assert!(Schedule::new("61 * * * *", None).is_err());
    let error = Schedule::new("0 3 * * *", Some("Mars/Olympus_Mons")).unwrap_err();
    assert!(matches!(&error, ScheduleError::TimeZone { name, .. } if name == "Mars/Olympus_Mons"));
}

#[test]
fn from_spec_reuses_the_pipeline_loader_s_parse() {
    let text = "on:\n  schedule:\n    - cron: '15 4 * * 0'\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n      - run: 'true'\n";
    let (pipeline, diagnostics) =
        sorat_pipeline::load::load(&SourceFile::new("pipeline.yaml", text));
    let pipeline = pipeline.unwrap_or_else(|| panic!("{diagnostics:?}"));
    let entry = &pipeline.triggers.schedule[0];
    let schedule = Schedule::from_spec(&entry.value, Some("America/New_York")).unwrap();
    assert_eq!(schedule.expression(), "15 4 * * 0");
    assert_eq!(schedule.time_zone_name(), "America/New_York");
    // Sunday 2025-01-05 04:15 EST is 09:15 UTC.
    assert_eq!(
        chain(&schedule, "2025-01-01T00:00:00Z", 1),
        ["2025-01-05T09:15:00Z"]
    );
}

//! Cron schedules: when a pipeline's `on.schedule` entry fires next.
//!
//! The expression is parsed by `sorat_pipeline::load::parse_cron` (five fields as GitHub's
//! `on.schedule.cron`, or a nickname such as `@daily`), so `sorat validate` and the scheduler
//! accept exactly the same text. The search is croner's, run on jiff's time zones: the wall
//! clock of the schedule's zone decides, so `0 9 * * *` in `Europe/Berlin` is 09:00 there in
//! winter and in summer.
//!
//! Across daylight saving time changes (croner's rules, as Vixie cron and the Open Cron
//! Pattern Specification have them):
//! - spring forward: a fixed-time entry whose time does not exist that day (`30 2 * * *` in
//!   Berlin on the last Sunday of March) runs at the first instant after the gap (03:00); an
//!   interval entry (`*/15 * * * *`) skips the missing hour;
//! - fall back: a fixed-time entry runs once, at the first of the two instants; an interval
//!   entry runs in both.

use croner::errors::CronError;
use croner::{CivilDate, CivilDateTime, CivilTime, Cron, CronDateTime, Resolution, Weekday};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp, ZonedDateTime};
use sorat_pipeline::spec::CronSchedule;

/// A cron expression in a time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    expression: String,
    cron: Cron,
    time_zone_name: String,
    time_zone: TimeZone,
}

/// Why a schedule cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The cron expression is invalid.
    #[error("invalid cron expression `{expression}`: {reason}")]
    Cron {
        /// The expression as given.
        expression: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The time zone is not an IANA time zone name this machine knows.
    #[error("unknown time zone `{name}`: {reason}")]
    TimeZone {
        /// The name as given.
        name: String,
        /// The time zone database's message.
        reason: String,
    },
}

impl Schedule {
    /// Parses `expression` for the zone `time_zone` (an IANA name like `Europe/Berlin`;
    /// `None` is UTC, as on GitHub).
    pub fn new(expression: &str, time_zone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let cron =
            sorat_pipeline::load::parse_cron(expression).map_err(|reason| ScheduleError::Cron {
                expression: expression.to_string(),
                reason,
            })?;
        Schedule::with_cron(expression.to_string(), cron, time_zone)
    }

    /// A schedule from a pipeline's `on.schedule` entry, already parsed by the loader.
    pub fn from_spec(
        spec: &CronSchedule,
        time_zone: Option<&str>,
    ) -> Result<Schedule, ScheduleError> {
        Schedule::with_cron(spec.expression.clone(), spec.cron.clone(), time_zone)
    }

    fn with_cron(
        expression: String,
        cron: Cron,
        time_zone: Option<&str>,
    ) -> Result<Schedule, ScheduleError> {
        let (time_zone_name, time_zone) = match time_zone {
            None => ("UTC".to_string(), TimeZone::UTC),
            Some(name) => {
                let zone = TimeZone::get(name).map_err(|error| ScheduleError::TimeZone {
                    name: name.to_string(),
                    reason: error.to_string(),
                })?;
                (name.to_string(), zone)
            }
        };
        Ok(Schedule {
            expression,
            cron,
            time_zone_name,
            time_zone,
        })
    }

    /// The cron expression as written.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The time zone's name (`UTC` when none was given).
    pub fn time_zone_name(&self) -> &str {
        &self.time_zone_name
    }

    /// The first instant strictly after `after` at which the schedule fires, or `None` when
    /// it never fires again (`0 0 30 2 *`) or the search leaves jiff's range.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let start = Zoned(after.to_zoned_datetime(self.time_zone.clone()));
        self.cron
            .find_next_occurrence(&start, false)
            .ok()
            .map(|next| next.0.timestamp())
    }

    /// The instants at which the schedule fires in `(after, until]`, at most `limit` of them:
    /// what a scheduler that slept from `after` to `until` has missed.
    pub fn fires_between(
        &self,
        after: Timestamp,
        until: Timestamp,
        limit: usize,
    ) -> Vec<Timestamp> {
        let mut fires = Vec::new();
        let mut cursor = after;
        while fires.len() < limit {
            match self.next_after(cursor) {
                Some(next) if next <= until => {
                    fires.push(next);
                    cursor = next;
                }
                _ => break,
            }
        }
        fires
    }
}

/// jiff 1's zoned date-time as croner sees it (croner's own `jiff` feature is for jiff 0.2).
#[derive(Clone, Debug)]
struct Zoned(ZonedDateTime);

fn to_civil(datetime: jiff::civil::DateTime) -> CivilDateTime {
    let date = CivilDate::from_ymd_opt(
        i32::from(datetime.year()),
        u32::from(datetime.month().unsigned_abs()),
        u32::from(datetime.day().unsigned_abs()),
    );
    let time = CivilTime::from_hms_opt(
        u32::from(datetime.hour().unsigned_abs()),
        u32::from(datetime.minute().unsigned_abs()),
        u32::from(datetime.second().unsigned_abs()),
    );
    match (date, time) {
        (Some(date), Some(time)) => CivilDateTime::new(date, time),
        // jiff keeps every part in range, and croner's ranges contain jiff's (its years reach
        // past jiff's -9999..=9999), so both parts always exist.
        _ => unreachable!("jiff produced a date or time croner cannot hold: {datetime}"),
    }
}

fn to_jiff(civil: CivilDateTime) -> Result<jiff::civil::DateTime, CronError> {
    let part = |value: u32| i8::try_from(value).map_err(|_| CronError::InvalidDate);
    let year = i16::try_from(civil.year()).map_err(|_| CronError::InvalidDate)?;
    jiff::civil::DateTime::new(
        year,
        part(civil.month())?,
        part(civil.day())?,
        part(civil.hour())?,
        part(civil.minute())?,
        part(civil.second())?,
        0,
    )
    .map_err(|_| CronError::InvalidDate)
}

impl CronDateTime for Zoned {
    fn to_civil(&self) -> CivilDateTime {
        to_civil(self.0.datetime())
    }

    fn civil_weekday(&self) -> Weekday {
        let days = self.0.weekday().to_sunday_zero_offset().unsigned_abs();
        Weekday::from_days_from_sunday(u32::from(days))
    }

    fn resolve_civil(&self, civil: CivilDateTime) -> Result<Resolution<Self>, CronError> {
        let ambiguous = self
            .0
            .time_zone()
            .to_ambiguous_zoned_datetime(to_jiff(civil)?);
        Ok(match ambiguous.offset() {
            AmbiguousOffset::Unambiguous { .. } => Resolution::Single(Zoned(
                ambiguous
                    .unambiguous()
                    .map_err(|_| CronError::InvalidTime)?,
            )),
            AmbiguousOffset::Fold { .. } => {
                let earlier = ambiguous
                    .clone()
                    .earlier()
                    .map_err(|_| CronError::InvalidTime)?;
                let later = ambiguous.later().map_err(|_| CronError::InvalidTime)?;
                Resolution::Ambiguous(Zoned(earlier), Zoned(later))
            }
            AmbiguousOffset::Gap { .. } => Resolution::Gap,
        })
    }

    fn checked_add_seconds(&self, seconds: i64) -> Option<Self> {
        self.0
            .checked_add(SignedDuration::from_secs(seconds))
            .ok()
            .map(Zoned)
    }

    fn cmp_instant(&self, other: &Self) -> std::cmp::Ordering {
        self.0.timestamp().cmp(&other.0.timestamp())
    }
}

//! Budget periods: which window of time a payment's spending counts in.
//!
//! A budget resets daily, weekly, monthly, yearly, or never. Windows are civil: a daily budget in
//! `Europe/Berlin` runs from local midnight to the next local midnight, so a day is 23 or 25 hours
//! long across a daylight-saving change, and a monthly budget ends at local midnight of the first
//! of the next month (so February has 28 or 29 days). A weekly window starts at local midnight of
//! the budget's `week_start` day (Monday by default, as in ISO 8601). When local midnight does not
//! exist (a zone that springs forward at 00:00), the window starts at the first instant of the day
//! that does, as RFC 5545 and Temporal do.
//!
//! Time zones come from the IANA database compiled into the binary (`jiff` with
//! `tzdb-bundle-always`), not from the machine: a boundary is the same on every host, including
//! containers without tzdata, and only changes when the crate's database is updated.
//!
//! Each window has a key (`d2024-03-10`, `w2024-03-11`, `m2024-02`, `y2024`; empty for `never`)
//! naming the ledger account that holds that window's budget (see `budget.rs`). The key is the
//! window's first local date with a letter for the period, so a budget whose period is changed
//! never reuses an account of the old period.

use jiff::{Timestamp, ToSpan, civil::Date, civil::Weekday, tz::TimeZone};

/// How often a budget resets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Period {
    Daily,
    Weekly,
    Monthly,
    Yearly,
    Never,
}

impl Period {
    pub const ALL: [Period; 5] = [
        Period::Daily,
        Period::Weekly,
        Period::Monthly,
        Period::Yearly,
        Period::Never,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
            Period::Never => "never",
        }
    }

    pub fn parse(s: &str) -> Option<Period> {
        Period::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// The day a weekly budget starts, by its lowercase English name.
pub fn parse_weekday(s: &str) -> Option<Weekday> {
    Some(match s {
        "monday" => Weekday::Monday,
        "tuesday" => Weekday::Tuesday,
        "wednesday" => Weekday::Wednesday,
        "thursday" => Weekday::Thursday,
        "friday" => Weekday::Friday,
        "saturday" => Weekday::Saturday,
        "sunday" => Weekday::Sunday,
        _ => return None,
    })
}

pub fn weekday_name(d: Weekday) -> &'static str {
    match d {
        Weekday::Monday => "monday",
        Weekday::Tuesday => "tuesday",
        Weekday::Wednesday => "wednesday",
        Weekday::Thursday => "thursday",
        Weekday::Friday => "friday",
        Weekday::Saturday => "saturday",
        Weekday::Sunday => "sunday",
    }
}

/// Why a calendar cannot be built or used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error("time_zone {0:?} is not an IANA time zone name")]
    UnknownTimeZone(String),
    #[error("the clock is outside the range of civil dates")]
    OutOfRange,
}

/// A period in a time zone, with the first day of its weeks.
#[derive(Clone, Debug)]
pub struct Calendar {
    pub period: Period,
    pub time_zone: String,
    pub week_start: Weekday,
    tz: TimeZone,
}

/// One window of a calendar: `[start_ms, end_ms)`, or all of time for `never`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// Names the window's ledger account; empty for `never`.
    pub key: String,
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
}

/// Longest accepted time zone name (the longest IANA name is about 30 characters).
pub const MAX_TIME_ZONE_LEN: usize = 64;

impl Calendar {
    pub fn new(period: Period, time_zone: &str, week_start: Weekday) -> Result<Self, PeriodError> {
        if time_zone.is_empty() || time_zone.len() > MAX_TIME_ZONE_LEN {
            return Err(PeriodError::UnknownTimeZone(time_zone.to_owned()));
        }
        let tz = TimeZone::get(time_zone)
            .map_err(|_| PeriodError::UnknownTimeZone(time_zone.to_owned()))?;
        Ok(Self {
            period,
            time_zone: time_zone.to_owned(),
            week_start,
            tz,
        })
    }

    /// The window holding the instant `now_ms`.
    pub fn window(&self, now_ms: u64) -> Result<Window, PeriodError> {
        if self.period == Period::Never {
            return Ok(Window::all_time());
        }
        let ms = i64::try_from(now_ms).map_err(|_| PeriodError::OutOfRange)?;
        let now = Timestamp::from_millisecond(ms).map_err(|_| PeriodError::OutOfRange)?;
        let today = now.to_zoned(self.tz.clone()).date();
        let (first, next, key) = match self.period {
            Period::Daily => {
                let next = today.tomorrow().map_err(|_| PeriodError::OutOfRange)?;
                (today, next, format!("d{today}"))
            }
            Period::Weekly => {
                let back = i64::from(
                    today.weekday().to_monday_zero_offset()
                        - self.week_start.to_monday_zero_offset(),
                )
                .rem_euclid(7);
                let first = today
                    .checked_sub(back.days())
                    .map_err(|_| PeriodError::OutOfRange)?;
                let next = first
                    .checked_add(7.days())
                    .map_err(|_| PeriodError::OutOfRange)?;
                (first, next, format!("w{first}"))
            }
            Period::Monthly => {
                let first = today.first_of_month();
                let next = first
                    .checked_add(1.month())
                    .map_err(|_| PeriodError::OutOfRange)?;
                (first, next, format!("m{}", first.strftime("%Y-%m")))
            }
            Period::Yearly => {
                let first = today.first_of_year();
                let next = first
                    .checked_add(1.year())
                    .map_err(|_| PeriodError::OutOfRange)?;
                (first, next, format!("y{}", first.strftime("%Y")))
            }
            Period::Never => return Ok(Window::all_time()),
        };
        Ok(Window {
            key,
            start_ms: Some(self.start_of(first)?),
            end_ms: Some(self.start_of(next)?),
        })
    }

    /// The first instant of local `date` (midnight, or the end of a gap that swallows it).
    fn start_of(&self, date: Date) -> Result<u64, PeriodError> {
        let z = date
            .to_zoned(self.tz.clone())
            .map_err(|_| PeriodError::OutOfRange)?;
        let start = z.start_of_day().map_err(|_| PeriodError::OutOfRange)?;
        u64::try_from(start.timestamp().as_millisecond()).map_err(|_| PeriodError::OutOfRange)
    }
}

impl Window {
    /// The single window of a budget that never resets.
    pub fn all_time() -> Window {
        Window {
            key: String::new(),
            start_ms: None,
            end_ms: None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ms(s: &str) -> u64 {
        u64::try_from(s.parse::<Timestamp>().unwrap().as_millisecond()).unwrap()
    }

    fn cal(p: Period, tz: &str) -> Calendar {
        Calendar::new(p, tz, Weekday::Monday).unwrap()
    }

    #[test]
    fn a_day_ends_at_local_midnight_not_utc_midnight() {
        let c = cal(Period::Daily, "America/Los_Angeles");
        // 23:59:59.999 local on 2024-06-10 is 06:59:59.999Z on the 11th.
        let w = c.window(ms("2024-06-11T06:59:59.999Z")).unwrap();
        assert_eq!(w.key, "d2024-06-10");
        assert_eq!(w.start_ms, Some(ms("2024-06-10T07:00:00Z")));
        assert_eq!(w.end_ms, Some(ms("2024-06-11T07:00:00Z")));
        assert_eq!(
            c.window(ms("2024-06-11T07:00:00Z")).unwrap().key,
            "d2024-06-11"
        );
    }

    #[test]
    fn days_are_23_and_25_hours_across_daylight_saving_changes() {
        let c = cal(Period::Daily, "Europe/Berlin");
        let spring = c.window(ms("2024-03-31T12:00:00Z")).unwrap();
        assert_eq!(spring.key, "d2024-03-31");
        assert_eq!(
            spring.end_ms.unwrap() - spring.start_ms.unwrap(),
            23 * 3_600_000
        );
        let autumn = c.window(ms("2024-10-27T12:00:00Z")).unwrap();
        assert_eq!(
            autumn.end_ms.unwrap() - autumn.start_ms.unwrap(),
            25 * 3_600_000
        );
        // The last millisecond of the long day still belongs to it.
        assert_eq!(
            c.window(ms("2024-10-27T22:59:59.999Z")).unwrap().key,
            "d2024-10-27"
        );
        assert_eq!(
            c.window(ms("2024-10-27T23:00:00Z")).unwrap().key,
            "d2024-10-28"
        );
    }

    #[test]
    fn a_day_whose_midnight_does_not_exist_starts_after_the_gap() {
        // Santiago springs forward at 00:00 local on 2024-09-08: the day starts at 01:00 (-03).
        let c = cal(Period::Daily, "America/Santiago");
        let w = c.window(ms("2024-09-08T12:00:00Z")).unwrap();
        assert_eq!(w.key, "d2024-09-08");
        assert_eq!(w.start_ms, Some(ms("2024-09-08T04:00:00Z")));
        assert_eq!(
            c.window(ms("2024-09-08T03:59:59.999Z")).unwrap().key,
            "d2024-09-07"
        );
    }

    #[test]
    fn weeks_start_on_the_configured_day() {
        // 2024-03-10 is a Sunday.
        let monday = Calendar::new(Period::Weekly, "UTC", Weekday::Monday).unwrap();
        let sunday = Calendar::new(Period::Weekly, "UTC", Weekday::Sunday).unwrap();
        let sat = ms("2024-03-09T23:59:59.999Z");
        let sun = ms("2024-03-10T00:00:00Z");
        let mon = ms("2024-03-11T00:00:00Z");
        assert_eq!(monday.window(sat).unwrap().key, "w2024-03-04");
        assert_eq!(monday.window(sun).unwrap().key, "w2024-03-04");
        assert_eq!(monday.window(mon).unwrap().key, "w2024-03-11");
        assert_eq!(sunday.window(sat).unwrap().key, "w2024-03-03");
        assert_eq!(sunday.window(sun).unwrap().key, "w2024-03-10");
        assert_eq!(sunday.window(mon).unwrap().key, "w2024-03-10");
        let w = sunday.window(sun).unwrap();
        assert_eq!(w.end_ms, Some(ms("2024-03-17T00:00:00Z")));
    }

    #[test]
    fn months_end_on_their_last_day_including_leap_days() {
        let c = cal(Period::Monthly, "Asia/Tokyo");
        // 2024-01-31 23:59:59.999 in Tokyo (+09) is 14:59:59.999Z.
        assert_eq!(
            c.window(ms("2024-01-31T14:59:59.999Z")).unwrap().key,
            "m2024-01"
        );
        assert_eq!(
            c.window(ms("2024-01-31T15:00:00Z")).unwrap().key,
            "m2024-02"
        );
        let feb = c.window(ms("2024-02-29T14:59:59.999Z")).unwrap();
        assert_eq!(feb.key, "m2024-02");
        assert_eq!(feb.end_ms, Some(ms("2024-02-29T15:00:00Z")));
        assert_eq!(
            feb.end_ms.unwrap() - feb.start_ms.unwrap(),
            29 * 86_400_000,
            "February 2024 has 29 days"
        );
        let d = cal(Period::Daily, "Asia/Tokyo");
        assert_eq!(
            d.window(ms("2024-02-29T12:00:00Z")).unwrap().key,
            "d2024-02-29"
        );
        let y = cal(Period::Yearly, "UTC");
        let w = y.window(ms("2024-02-29T12:00:00Z")).unwrap();
        assert_eq!(w.key, "y2024");
        assert_eq!(w.end_ms.unwrap() - w.start_ms.unwrap(), 366 * 86_400_000);
        assert_eq!(
            y.window(ms("2024-12-31T23:59:59.999Z")).unwrap().key,
            "y2024"
        );
        assert_eq!(y.window(ms("2025-01-01T00:00:00Z")).unwrap().key, "y2025");
    }

    #[test]
    fn never_is_one_window_and_bad_zones_are_refused() {
        let w = cal(Period::Never, "UTC").window(0).unwrap();
        assert_eq!(w.key, "");
        assert_eq!((w.start_ms, w.end_ms), (None, None));
        for bad in ["", "Mars/Olympus", "../etc/passwd", &"x".repeat(65)] {
            assert!(
                Calendar::new(Period::Daily, bad, Weekday::Monday).is_err(),
                "{bad}"
            );
        }
        assert!(Calendar::new(Period::Daily, "UTC", Weekday::Monday).is_ok());
        for p in Period::ALL {
            assert_eq!(Period::parse(p.as_str()), Some(p));
        }
        assert_eq!(parse_weekday("sunday"), Some(Weekday::Sunday));
        assert_eq!(parse_weekday("Sunday"), None);
    }
}

//! Cron schedules as CronJobs write them (the standard five fields,
//! names of months and weekdays, `*`, `?`, ranges, steps and lists, the
//! `@hourly`-style descriptors), and their next time in a time zone.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};

/// A parsed schedule: one bit per allowed value of each field.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// A day field was `*` (or `?`): the other decides alone.
    any_day: bool,
    any_weekday: bool,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

fn value(text: &str, names: &[&str], offset: u32) -> Result<u32, String> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        return Ok(i as u32 + offset);
    }
    text.parse().map_err(|_| {
        format!("failed to parse int from {text}: strconv.Atoi: parsing {text:?}: invalid syntax")
    })
}

fn field(
    text: &str,
    min: u32,
    max: u32,
    names: &[&str],
    offset: u32,
) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let mut star = false;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                Some(
                    s.parse::<u32>()
                        .map_err(|_| format!("failed to parse int from {s}"))?,
                ),
            ),
            None => (part, None),
        };
        let (low, high) = if range == "*" || range == "?" {
            if step.is_none() {
                star = true;
            }
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a, names, offset)?, value(b, names, offset)?)
        } else {
            let v = value(range, names, offset)?;
            (v, if step.is_some() { max } else { v })
        };
        if low < min || high > max || low > high {
            return Err(format!(
                "end of range ({high}) above maximum ({max}): {part}"
            ));
        }
        let step = step.unwrap_or(1);
        if step == 0 {
            return Err(format!("step of range should be a positive number: {part}"));
        }
        let mut v = low;
        while v <= high {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, star))
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let text = text.trim();
        let expanded = match text {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => {
                return Err(format!("unrecognized descriptor: {other}"));
            }
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "expected exactly 5 fields, found {}: [{}]",
                fields.len(),
                fields.join(" ")
            ));
        }
        let (minutes, _) = field(fields[0], 0, 59, &[], 0)?;
        let (hours, _) = field(fields[1], 0, 23, &[], 0)?;
        let (days, any_day) = field(fields[2], 1, 31, &[], 0)?;
        let (months, _) = field(fields[3], 1, 12, &MONTHS, 1)?;
        let (weekdays, any_weekday) = field(fields[4], 0, 6, &WEEKDAYS, 0)?;
        Ok(Schedule {
            minutes,
            hours,
            days,
            months,
            weekdays,
            any_day,
            any_weekday,
        })
    }

    fn day_matches(&self, date: Date) -> bool {
        let day = self.days & (1 << date.day()) != 0;
        let weekday = self.weekdays & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        if self.any_day || self.any_weekday {
            day && weekday
        } else {
            day || weekday
        }
    }

    /// The first time after `after` that the schedule fires, in `tz`.
    pub fn next(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = after.to_zoned(tz.clone());
        // From the next whole minute.
        let mut t: DateTime = start
            .datetime()
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?;
        t = t.checked_add(1.minute()).ok()?;
        let limit = t.year() + 5;
        while t.year() <= limit {
            if self.months & (1 << t.month()) == 0 {
                let first = Date::new(t.year(), t.month(), 1)
                    .ok()?
                    .checked_add(1.month())
                    .ok()?;
                t = first.to_datetime(Time::midnight());
                continue;
            }
            if !self.day_matches(t.date()) {
                t = t
                    .date()
                    .checked_add(1.day())
                    .ok()?
                    .to_datetime(Time::midnight());
                continue;
            }
            if self.hours & (1 << t.hour()) == 0 {
                t = t
                    .with()
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if self.minutes & (1 << t.minute()) == 0 {
                t = t.checked_add(1.minute()).ok()?;
                continue;
            }
            let zoned: Zoned = t.to_zoned(tz.clone()).ok()?;
            if zoned.timestamp() > after {
                return Some(zoned.timestamp());
            }
            t = t.checked_add(1.minute()).ok()?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn schedules_fire_when_their_fields_say() {
        let utc = TimeZone::UTC;
        let cases = [
            (
                "*/5 * * * *",
                "2026-11-30T12:03:10Z",
                "2026-11-30T12:05:00Z",
            ),
            ("0 * * * *", "2026-11-30T12:00:00Z", "2026-11-30T13:00:00Z"),
            (
                "30 2 * * MON-FRI",
                "2026-11-28T12:00:00Z",
                "2026-11-30T02:30:00Z",
            ),
            (
                "0 0 1 JAN *",
                "2026-11-30T12:00:00Z",
                "2027-01-01T00:00:00Z",
            ),
            ("@daily", "2026-11-30T12:00:00Z", "2026-12-01T00:00:00Z"),
            // Day of month or day of week when both are given.
            ("0 0 13 * 5", "2026-11-30T00:00:00Z", "2026-12-04T00:00:00Z"),
            (
                "15,45 */6 ? * *",
                "2026-11-30T06:20:00Z",
                "2026-11-30T06:45:00Z",
            ),
            ("0 0 29 2 *", "2026-11-30T00:00:00Z", "2028-02-29T00:00:00Z"),
        ];
        for (schedule, after, want) in cases {
            let parsed = Schedule::parse(schedule).unwrap();
            assert_eq!(
                parsed.next(at(after), &utc),
                Some(at(want)),
                "{schedule} after {after}"
            );
        }
    }

    #[test]
    fn a_time_zone_moves_the_schedule() {
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let daily = Schedule::parse("0 9 * * *").unwrap();
        assert_eq!(
            daily.next(at("2026-11-30T00:00:00Z"), &tz),
            Some(at("2026-11-30T08:00:00Z"))
        );
    }

    #[test]
    fn bad_schedules_are_refused() {
        for bad in [
            "* * * *",
            "61 * * * *",
            "* * * * MON-XYZ",
            "*/0 * * * *",
            "@fortnightly",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }
}

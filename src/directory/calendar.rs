//! Working days: a service's time frame is counted in working days, skipping the weekend
//! and public holidays configured in `[calendar]`. Days are UTC dates.

use std::collections::BTreeSet;

use time::{Date, Weekday};

use super::config::CalendarConfig;

const DAY_MS: i64 = 86_400_000;
/// Julian day number of 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i64 = 2_440_588;

/// Which dates are working days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    /// Indexed by `Weekday::number_days_from_monday`.
    weekend: [bool; 7],
    holidays: BTreeSet<Date>,
}

/// A weekend of all seven days leaves no working day to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the weekend covers all seven days, so no day is a working day")]
pub struct NoWorkingDay;

impl Calendar {
    pub fn new(weekend: &[Weekday], holidays: &[Date]) -> Result<Calendar, NoWorkingDay> {
        let mut days = [false; 7];
        for d in weekend {
            days[usize::from(d.number_days_from_monday())] = true;
        }
        if days.iter().all(|d| *d) {
            return Err(NoWorkingDay);
        }
        Ok(Calendar {
            weekend: days,
            holidays: holidays.iter().copied().collect(),
        })
    }

    pub fn from_config(config: &CalendarConfig) -> Result<Calendar, NoWorkingDay> {
        Calendar::new(&config.weekend, &config.holidays)
    }

    pub fn is_working_day(&self, date: Date) -> bool {
        !self.weekend[usize::from(date.weekday().number_days_from_monday())]
            && !self.holidays.contains(&date)
    }
}

impl Default for Calendar {
    /// Saturday and Sunday off, as in the UAE; no holidays.
    fn default() -> Self {
        Calendar::new(&[Weekday::Saturday, Weekday::Sunday], &[]).expect("five working days")
    }
}

/// The UTC date of a Unix time in milliseconds.
pub fn utc_date(ms: i64) -> Option<Date> {
    let julian = ms.div_euclid(DAY_MS) + UNIX_EPOCH_JULIAN_DAY;
    Date::from_julian_day(i32::try_from(julian).ok()?).ok()
}

/// The last millisecond of a UTC date.
pub fn end_of_day_ms(date: Date) -> i64 {
    (i64::from(date.to_julian_day()) - UNIX_EPOCH_JULIAN_DAY + 1) * DAY_MS - 1
}

/// When a time frame of `days` working days that starts at `start_ms` ends: the last
/// millisecond (UTC) of the `days`-th working day after the start day. The start day
/// itself never counts, whether it is a working day or not; weekend days and holidays are
/// skipped. With `days` = 0 it is the end of the start day.
pub fn add_working_days(start_ms: i64, days: u32, calendar: &Calendar) -> i64 {
    let Some(mut date) = utc_date(start_ms) else {
        return start_ms;
    };
    let mut left = days;
    while left > 0 {
        let Some(next) = date.next_day() else { break };
        date = next;
        if calendar.is_working_day(date) {
            left -= 1;
        }
    }
    end_of_day_ms(date)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Month;

    fn date(y: i32, m: u8, d: u8) -> Date {
        Date::from_calendar_date(y, Month::try_from(m).unwrap(), d).unwrap()
    }

    /// Unix ms of a UTC date and time.
    fn at(y: i32, m: u8, d: u8, hour: i64) -> i64 {
        (i64::from(date(y, m, d).to_julian_day()) - UNIX_EPOCH_JULIAN_DAY) * DAY_MS
            + hour * 3_600_000
    }

    fn due(start: i64, days: u32, cal: &Calendar) -> Date {
        let ms = add_working_days(start, days, cal);
        assert_eq!((ms + 1) % DAY_MS, 0, "due at the last millisecond of a day");
        utc_date(ms).unwrap()
    }

    #[test]
    fn counts_from_the_day_after_the_start_and_skips_the_weekend() {
        let cal = Calendar::default();
        // Monday 2026-11-16, 10:00 UTC.
        let monday = at(2026, 11, 16, 10);
        assert_eq!(due(monday, 1, &cal), date(2026, 11, 17));
        assert_eq!(due(monday, 4, &cal), date(2026, 11, 20)); // Friday
        assert_eq!(due(monday, 5, &cal), date(2026, 11, 23)); // Saturday, Sunday skipped
        assert_eq!(due(monday, 10, &cal), date(2026, 11, 30));
        // Started on a Friday late in the day: one day is the next Monday.
        let friday = at(2026, 11, 20, 23);
        assert_eq!(due(friday, 1, &cal), date(2026, 11, 23));
        // Started on a Saturday: the weekend day does not count either.
        assert_eq!(due(at(2026, 11, 21, 8), 1, &cal), date(2026, 11, 23));
        // Zero days: the end of the start day.
        assert_eq!(due(monday, 0, &cal), date(2026, 11, 16));
        assert_eq!(
            add_working_days(monday, 1, &cal),
            at(2026, 11, 18, 0) - 1,
            "the very end of Tuesday"
        );
    }

    #[test]
    fn skips_public_holidays_and_a_custom_weekend() {
        // UAE: Commemoration Day 1 December, National Day 2-3 December 2026
        // (Tuesday to Thursday).
        let holidays = [date(2026, 12, 1), date(2026, 12, 2), date(2026, 12, 3)];
        let cal = Calendar::new(&[Weekday::Saturday, Weekday::Sunday], &holidays).unwrap();
        assert!(!cal.is_working_day(date(2026, 12, 2)));
        assert!(cal.is_working_day(date(2026, 12, 4)));
        // Monday 30 November: the next working day is Friday 4 December, then Monday 7.
        let monday = at(2026, 11, 30, 9);
        assert_eq!(due(monday, 1, &cal), date(2026, 12, 4));
        assert_eq!(due(monday, 2, &cal), date(2026, 12, 7));
        // Across the year end: New Year's Day 2027 (a Friday) off as well.
        let cal =
            Calendar::new(&[Weekday::Saturday, Weekday::Sunday], &[date(2027, 1, 1)]).unwrap();
        assert_eq!(due(at(2026, 12, 31, 12), 1, &cal), date(2027, 1, 4));
        // A Friday-Saturday weekend (as before 2022): Sunday is a working day.
        let cal = Calendar::new(&[Weekday::Friday, Weekday::Saturday], &[]).unwrap();
        assert_eq!(due(at(2026, 11, 19, 9), 1, &cal), date(2026, 11, 22));
        // 365 working days with a five-day week are 73 weeks.
        let cal = Calendar::default();
        let monday = at(2026, 1, 5, 0);
        assert_eq!(due(monday, 365, &cal), date(2027, 5, 31)); // a Monday, 73 weeks on
    }

    #[test]
    fn a_weekend_of_seven_days_is_refused() {
        let all = [
            Weekday::Monday,
            Weekday::Tuesday,
            Weekday::Wednesday,
            Weekday::Thursday,
            Weekday::Friday,
            Weekday::Saturday,
            Weekday::Sunday,
        ];
        assert_eq!(Calendar::new(&all, &[]), Err(NoWorkingDay));
        assert!(Calendar::new(&all[..6], &[]).is_ok());
    }

    #[test]
    fn dates_before_1970_work() {
        let ms = -1; // 1969-12-31T23:59:59.999Z
        assert_eq!(utc_date(ms), Some(date(1969, 12, 31)));
        assert_eq!(end_of_day_ms(date(1969, 12, 31)), -1);
    }
}

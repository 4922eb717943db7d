//! The clock behind a template's `strftime_now`, which transformers binds to `datetime.now().strftime`: the local
//! wall clock by default, or a fixed instant so that dated templates (Llama-3.2's "Today Date") render
//! reproducibly.

use std::fmt::Write;

/// A civil date and time of day, with no time zone attached (as Python's naive `datetime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    /// The year, e.g. 2024.
    pub year: i32,
    /// The month, 1 to 12.
    pub month: u32,
    /// The day of the month, 1 to 31.
    pub day: u32,
    /// The hour, 0 to 23.
    pub hour: u32,
    /// The minute, 0 to 59.
    pub minute: u32,
    /// The second, 0 to 59.
    pub second: u32,
}

/// Where `strftime_now` reads the time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Clock {
    /// The machine's local time when the template is rendered (transformers' behaviour).
    #[default]
    Local,
    /// Always this instant.
    Fixed(DateTime),
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] =
    ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

impl DateTime {
    /// A date at midnight.
    pub fn date(year: i32, month: u32, day: u32) -> Self {
        Self { year, month, day, hour: 0, minute: 0, second: 0 }
    }

    /// Checks the fields name a real date and time.
    pub fn validate(&self) -> Result<(), String> {
        let leap = (self.year % 4 == 0 && self.year % 100 != 0) || self.year % 400 == 0;
        let days = match self.month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            m => return Err(format!("month {m} is not between 1 and 12")),
        };
        if self.day == 0 || self.day > days {
            return Err(format!(
                "day {} is not in month {} of {}",
                self.day, self.month, self.year
            ));
        }
        if self.hour > 23 || self.minute > 59 || self.second > 59 {
            return Err(format!(
                "{:02}:{:02}:{:02} is not a time of day",
                self.hour, self.minute, self.second
            ));
        }
        Ok(())
    }

    /// Days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
    fn days_from_epoch(&self) -> i64 {
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// 0 for Monday to 6 for Sunday.
    fn weekday(&self) -> usize {
        // 1970-01-01 was a Thursday.
        (self.days_from_epoch() + 3).rem_euclid(7) as usize
    }

    fn day_of_year(&self) -> i64 {
        self.days_from_epoch() - DateTime::date(self.year, 1, 1).days_from_epoch() + 1
    }

    /// Formats like Python's `datetime.strftime` in the C locale, for the directives chat templates use:
    /// `%a %A %b %B %d %H %I %j %m %M %p %S %y %Y %%`. Others are an error rather than a guess.
    pub fn strftime(&self, format: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut chars = format.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            let month = MONTHS[(self.month as usize).saturating_sub(1) % 12];
            let weekday = WEEKDAYS[self.weekday()];
            // Writing to a String cannot fail.
            let _ = match chars.next() {
                Some('a') => write!(out, "{}", &weekday[..3]),
                Some('A') => write!(out, "{weekday}"),
                Some('b') => write!(out, "{}", &month[..3]),
                Some('B') => write!(out, "{month}"),
                Some('d') => write!(out, "{:02}", self.day),
                Some('H') => write!(out, "{:02}", self.hour),
                Some('I') => write!(out, "{:02}", (self.hour + 11) % 12 + 1),
                Some('j') => write!(out, "{:03}", self.day_of_year()),
                Some('m') => write!(out, "{:02}", self.month),
                Some('M') => write!(out, "{:02}", self.minute),
                Some('p') => write!(out, "{}", if self.hour < 12 { "AM" } else { "PM" }),
                Some('S') => write!(out, "{:02}", self.second),
                Some('y') => write!(out, "{:02}", self.year.rem_euclid(100)),
                Some('Y') => write!(out, "{}", self.year),
                Some('%') => write!(out, "%"),
                Some(other) => return Err(format!("strftime directive %{other} is not supported")),
                None => return Err("strftime format ends with a lone %".into()),
            };
        }
        Ok(out)
    }
}

impl Clock {
    /// The current time on this clock.
    pub fn now(&self) -> Result<DateTime, String> {
        match self {
            Clock::Fixed(t) => Ok(*t),
            Clock::Local => local_now(),
        }
    }
}

fn local_now() -> Result<DateTime, String> {
    // SAFETY: `time` accepts a null pointer; `localtime_r` writes only into the `tm` we own.
    let tm = unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return Err("the local time is not available".into());
        }
        tm
    };
    Ok(DateTime {
        year: tm.tm_year + 1900,
        month: (tm.tm_mon + 1) as u32,
        day: tm.tm_mday as u32,
        hour: tm.tm_hour as u32,
        minute: tm.tm_min as u32,
        // A leap second reads as the 59th.
        second: tm.tm_sec.min(59) as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_python_strftime() {
        let t = DateTime { year: 2025, month: 3, day: 7, hour: 14, minute: 5, second: 9 };
        // datetime(2025, 3, 7, 14, 5, 9).strftime(...) in CPython.
        assert_eq!(t.strftime("%d %b %Y").unwrap(), "07 Mar 2025");
        assert_eq!(t.strftime("%A %B %d, %Y").unwrap(), "Friday March 07, 2025");
        assert_eq!(
            t.strftime("%Y-%m-%d %H:%M:%S %I%p %j %y %a %%").unwrap(),
            "2025-03-07 14:05:09 02PM 066 25 Fri %"
        );
        assert_eq!(DateTime::date(2024, 7, 26).strftime("%d %b %Y").unwrap(), "26 Jul 2024");
        assert_eq!(DateTime::date(2000, 1, 1).strftime("%a %j").unwrap(), "Sat 001");
        assert!(t.strftime("%Q").unwrap_err().contains("%Q"));
        assert!(DateTime::date(2023, 2, 29).validate().is_err());
        assert!(DateTime::date(2024, 2, 29).validate().is_ok());
    }

    #[test]
    fn the_local_clock_reads_a_valid_time() {
        let now = Clock::Local.now().unwrap();
        now.validate().unwrap();
        assert!(now.year >= 2024);
    }
}

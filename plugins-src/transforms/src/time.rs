//! Timestamps as text, in the subset of Java's `SimpleDateFormat` patterns Kafka users write
//! (`yyyy`, `yy`, `MM`, `dd`, `HH`, `mm`, `ss`, `SSS`, quoted literals `'T'`), always UTC.

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of days since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// One piece of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    /// A field letter and how many times it repeats.
    Field(char, usize),
    Literal(String),
}

/// A parsed `SimpleDateFormat` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format(Vec<Piece>);

impl Format {
    pub fn parse(pattern: &str) -> Result<Format, String> {
        let mut pieces = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\'' {
                let literal: String = chars.by_ref().take_while(|c| *c != '\'').collect();
                pieces.push(Piece::Literal(if literal.is_empty() {
                    "'".into()
                } else {
                    literal
                }));
            } else if c.is_ascii_alphabetic() {
                if !"yMdHmsS".contains(c) {
                    return Err(format!(
                        "pattern letter {c:?} is not supported; use yyyy, MM, dd, HH, mm, ss, SSS"
                    ));
                }
                let mut n = 1;
                while chars.next_if_eq(&c).is_some() {
                    n += 1;
                }
                pieces.push(Piece::Field(c, n));
            } else {
                pieces.push(Piece::Literal(c.to_string()));
            }
        }
        Ok(Format(pieces))
    }

    /// `millis` since the epoch, formatted.
    pub fn format(&self, millis: i64) -> String {
        let days = millis.div_euclid(86_400_000);
        let ms = millis.rem_euclid(86_400_000);
        let (y, mo, d) = civil_from_days(days);
        let mut out = String::new();
        for piece in &self.0 {
            let (value, width) = match piece {
                Piece::Literal(l) => {
                    out.push_str(l);
                    continue;
                }
                Piece::Field('y', 2) => (y.rem_euclid(100), 2),
                Piece::Field('y', n) => (y, *n),
                Piece::Field('M', n) => (mo, *n),
                Piece::Field('d', n) => (d, *n),
                Piece::Field('H', n) => (ms / 3_600_000, *n),
                Piece::Field('m', n) => (ms / 60_000 % 60, *n),
                Piece::Field('s', n) => (ms / 1000 % 60, *n),
                Piece::Field(_, n) => (ms % 1000, *n),
            };
            out.push_str(&format!("{value:0width$}"));
        }
        out
    }

    /// Text in this format, as milliseconds since the epoch.
    pub fn parse_text(&self, text: &str) -> Result<i64, String> {
        let bad = || format!("{text:?} does not match the format");
        let (mut y, mut mo, mut d, mut h, mut mi, mut s, mut ms) = (1970, 1, 1, 0, 0, 0, 0);
        let mut rest = text;
        for piece in &self.0 {
            match piece {
                Piece::Literal(l) => rest = rest.strip_prefix(l.as_str()).ok_or_else(bad)?,
                Piece::Field(c, n) => {
                    let digits = rest.chars().take_while(char::is_ascii_digit).count();
                    let take = if *c == 'y' && *n != 2 {
                        digits
                    } else {
                        (*n).max(1).min(digits)
                    };
                    let take = if *n >= 2 && *c != 'y' {
                        (*n).min(digits)
                    } else {
                        take
                    };
                    let value: i64 = rest
                        .get(..take)
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(bad)?;
                    rest = &rest[take..];
                    match c {
                        'y' if *n == 2 => y = 2000 + value,
                        'y' => y = value,
                        'M' => mo = value,
                        'd' => d = value,
                        'H' => h = value,
                        'm' => mi = value,
                        's' => s = value,
                        _ => ms = value,
                    }
                }
            }
        }
        if !rest.is_empty() || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
            return Err(bad());
        }
        Ok(days_from_civil(y, mo, d) * 86_400_000 + ((h * 60 + mi) * 60 + s) * 1000 + ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_back() {
        let f = Format::parse("yyyy-MM-dd'T'HH:mm:ss.SSS").unwrap();
        assert_eq!(f.format(1_700_000_000_123), "2023-11-14T22:13:20.123");
        assert_eq!(
            f.parse_text("2023-11-14T22:13:20.123"),
            Ok(1_700_000_000_123)
        );
        assert_eq!(Format::parse("yyyyMMdd").unwrap().format(0), "19700101");
    }
}

//! Keeps resolved secrets out of everything the host shows or logs for a task: each value
//! the host resolved from a `${env:…}` / `${file:…}` reference is written back as the
//! reference the user wrote (task traces, start failures, guest log lines, stdout, stderr).

use std::borrow::Cow;
use std::sync::Arc;

/// Resolved value → reference pairs of one task; cheap to clone.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest value first, so a value is replaced before any shorter one inside it.
    pairs: Arc<Vec<(String, String)>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} values)", self.pairs.len())
    }
}

impl Redactor {
    /// A redactor for `(resolved value, shown as)` pairs. A value holding a list (`,`) also
    /// has each entry replaced, shown as `an entry of <reference>`. Empty values are ignored.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut all: Vec<(String, String)> = Vec::new();
        for (value, shown) in pairs {
            let parts: Vec<&str> = value
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect();
            if parts.len() > 1 {
                all.extend(
                    parts
                        .iter()
                        .map(|part| (part.to_string(), format!("an entry of {shown}"))),
                );
            }
            all.push((value, shown));
        }
        all.retain(|(value, _)| !value.is_empty());
        all.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        all.dedup_by(|a, b| a.0 == b.0);
        Redactor {
            pairs: Arc::new(all),
        }
    }

    /// Length of the longest resolved value: a line is kept this much beyond its cut, so the
    /// redaction sees every value whole before the line is cut.
    pub fn longest(&self) -> usize {
        self.pairs.first().map_or(0, |(value, _)| value.len())
    }

    /// `text` with every resolved value replaced by the reference it came from.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut text = Cow::Borrowed(text);
        for (value, shown) in self.pairs.iter() {
            if text.contains(value.as_str()) {
                text = Cow::Owned(text.replace(value.as_str(), shown));
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_values_are_shown_as_their_references() {
        let redactor = Redactor::new([
            ("/srv/s3cret/out.txt".into(), "${env:OUT}".into()),
            ("/srv/s3cret".into(), "the directory of ${env:OUT}".into()),
            ("hunter2".into(), "${file:/etc/creds:password}".into()),
            ("a.example:1,b.example:2".into(), "${env:HOSTS}".into()),
            (String::new(), "${env:EMPTY}".into()),
        ]);
        assert_eq!(
            redactor.redact("cannot open /srv/s3cret/out.txt: no such file"),
            "cannot open ${env:OUT}: no such file"
        );
        assert_eq!(
            redactor.redact("dir /srv/s3cret missing; password hunter2"),
            "dir the directory of ${env:OUT} missing; password ${file:/etc/creds:password}"
        );
        assert_eq!(
            redactor.redact("network.allow: cannot resolve \"b.example:2\""),
            "network.allow: cannot resolve \"an entry of ${env:HOSTS}\""
        );
        assert_eq!(redactor.redact("nothing secret"), "nothing secret");
        assert!(!format!("{redactor:?}").contains("hunter2"));
    }
}

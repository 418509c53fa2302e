//! Names the host shows, logs and keys things by: connector names (from API users) and plugin
//! names, aliases and versions (from a component's `describe`, so untrusted). One rule for all
//! of them, and the escaping of any other untrusted text that goes into a log line or a
//! message.
//!
//! A name is at most [`MAX_NAME_CHARS`] characters (characters, not bytes), has no `/` or `\`,
//! is not `.` and holds no `..`, and every character is visible: no control characters, no
//! format characters (general category Cf: zero-width spaces and joiners, bidi embeddings,
//! overrides and isolates, the byte order mark, the soft hyphen, …) and no line or paragraph
//! separators. Such characters forge log lines or make two different names look alike.

/// Longest name, in characters.
pub const MAX_NAME_CHARS: usize = 249;
/// Longest untrusted text [`escape`] shows before cutting it short.
const MAX_SHOWN_CHARS: usize = 200;

/// What a name names; it is the first word of the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Connector,
    Plugin,
    Alias,
    Version,
}

impl NameKind {
    fn noun(self) -> &'static str {
        match self {
            NameKind::Connector => "connector name",
            NameKind::Plugin => "plugin name",
            NameKind::Alias => "plugin alias",
            NameKind::Version => "plugin version",
        }
    }
}

/// Why a name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameProblem {
    Empty,
    TooLong(usize),
    Slash,
    DotDot,
    Control,
    Invisible(char),
}

impl std::fmt::Display for NameProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameProblem::Empty => write!(f, "is empty"),
            NameProblem::TooLong(chars) => {
                write!(f, "is {chars} characters long, over {MAX_NAME_CHARS}")
            }
            NameProblem::Slash => write!(f, "contains a slash"),
            NameProblem::DotDot => write!(f, "contains '..'"),
            NameProblem::Control => write!(f, "contains a control character"),
            NameProblem::Invisible(c) => write!(
                f,
                "contains the invisible format character U+{:04X}",
                u32::from(*c)
            ),
        }
    }
}

/// A refused name: what it names, the name (escaped and cut short when shown), and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {} {}: it {problem}; use up to {MAX_NAME_CHARS} printable characters without '/' or '..'", .kind.noun(), escape(.name))]
pub struct NameError {
    pub kind: NameKind,
    pub name: String,
    pub problem: NameProblem,
}

/// Checks `name` against the one rule for names (see the module documentation).
pub fn validate(kind: NameKind, name: &str) -> Result<(), NameError> {
    let chars = name.chars().count();
    let problem = if name.is_empty() {
        Some(NameProblem::Empty)
    } else if chars > MAX_NAME_CHARS {
        Some(NameProblem::TooLong(chars))
    } else if name.contains(['/', '\\']) {
        Some(NameProblem::Slash)
    } else if name == "." || name.contains("..") {
        Some(NameProblem::DotDot)
    } else if name.chars().any(char::is_control) {
        Some(NameProblem::Control)
    } else {
        name.chars()
            .find(|c| is_invisible(*c))
            .map(NameProblem::Invisible)
    };
    match problem {
        Some(problem) => Err(NameError {
            kind,
            name: name.to_string(),
            problem,
        }),
        None => Ok(()),
    }
}

/// Untrusted text for a log line or a message: quoted, with `"` and `\` escaped, and
/// [`visible`] (at most [`MAX_SHOWN_CHARS`] characters).
pub fn escape(text: &str) -> String {
    let quoted = text.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{}\"", visible(&quoted, MAX_SHOWN_CHARS))
}

/// `text` with control, format and separator characters written as escapes (so it stays on
/// one line and shows what it holds), cut short after `max_chars` characters with the count
/// of the rest.
pub fn visible(text: &str, max_chars: usize) -> String {
    let mut shown = String::new();
    let mut chars = text.chars();
    for c in chars.by_ref().take(max_chars) {
        if c.is_control() || is_invisible(c) {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    let rest = chars.count();
    if rest > 0 {
        shown.push_str(&format!("… ({rest} more characters)"));
    }
    shown
}

/// Format characters (general category Cf) and the line and paragraph separators: they change
/// how text around them shows, or do not show at all.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(name: &str) -> Option<NameProblem> {
        validate(NameKind::Connector, name).err().map(|e| e.problem)
    }

    #[test]
    fn length_is_counted_in_characters() {
        assert_eq!(problem(&"é".repeat(249)), None);
        assert_eq!(problem(&"é".repeat(250)), Some(NameProblem::TooLong(250)));
    }

    #[test]
    fn invisible_and_control_characters_are_refused() {
        for c in [
            '\u{202E}', '\u{200B}', '\u{FEFF}', '\u{00AD}', '\u{2066}', '\u{2028}',
        ] {
            assert_eq!(
                problem(&format!("a{c}b")),
                Some(NameProblem::Invisible(c)),
                "U+{:04X}",
                u32::from(c)
            );
        }
        assert_eq!(problem("a\nb"), Some(NameProblem::Control));
        assert_eq!(problem("a\0b"), Some(NameProblem::Control));
        assert_eq!(problem("../x"), Some(NameProblem::Slash));
        assert_eq!(problem("a..b"), Some(NameProblem::DotDot));
        assert_eq!(problem(""), Some(NameProblem::Empty));
        assert_eq!(problem("org.apache.Connector émoji ✓"), None);
    }

    #[test]
    fn errors_keep_their_shape_and_escape_the_name() {
        let error = validate(NameKind::Plugin, "evil\nINFO forged").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid plugin name \"evil\\nINFO forged\": it contains a control character; \
             use up to 249 printable characters without '/' or '..'"
        );
        let long = escape(&"x".repeat(10_000));
        assert!(long.ends_with("… (9800 more characters)\""), "{long}");
        assert_eq!(escape("a\u{202E}b"), "\"a\\u{202e}b\"");
    }
}

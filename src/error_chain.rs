//! [`Causes`]: an error with its chain of causes on one line (`what: cause: cause`).
//!
//! Library errors never interpolate their source into their own message (the source is
//! reachable through [`Error::source`]), so a message shown without its causes says what failed
//! but not why. Code that turns an error into text for the user (a step error rendered with
//! its Dockerfile line, a progress warning) writes it through [`Causes`], which prints each
//! cause once.

use std::error::Error;
use std::fmt;

/// Displays an error followed by each of its causes, `": "`-separated. A cause whose text
/// the message already ends with is not repeated (an error from outside kiln may still quote
/// its source).
pub struct Causes<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(c) = cause {
            let text = c.to_string();
            if !text.is_empty() && !shown.ends_with(&text) {
                shown.push_str(": ");
                shown.push_str(&text);
            }
            cause = c.source();
        }
        f.write_str(&shown)
    }
}

/// For the tests of each module's error enums (issue 14): no message repeats its cause.
#[cfg(test)]
pub(crate) mod testing {
    use std::error::Error;
    use std::io;

    use super::Causes;

    /// The text of the cause the tests build their errors around.
    pub(crate) const CAUSE: &str = "the-underlying-cause";

    /// An io error saying [`CAUSE`].
    pub(crate) fn io() -> io::Error {
        io::Error::other(CAUSE)
    }

    /// Each error in `e`'s chain says what failed, never its own source's text again, and the
    /// chain shows `cause` exactly once.
    pub(crate) fn assert_each_cause_once(e: &(dyn Error + 'static), cause: &str) {
        let mut current = Some(e);
        while let Some(err) = current {
            if let Some(source) = err.source() {
                let (own, theirs) = (err.to_string(), source.to_string());
                assert!(
                    !own.contains(&theirs),
                    "{own:?} repeats its cause {theirs:?} ({err:?})"
                );
            }
            current = err.source();
        }
        let shown = Causes(e).to_string();
        assert_eq!(shown.matches(cause).count(), 1, "{shown}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[derive(Debug, thiserror::Error)]
    #[error("reading {0}")]
    struct Outer(&'static str, #[source] io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("opening: {0}")]
    struct Quoting(#[source] io::Error);

    #[test]
    fn prints_each_cause_once() {
        let e = Outer("/x", io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(Causes(&e).to_string(), "reading /x: entity not found");
        let q = Quoting(io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(Causes(&q).to_string(), "opening: entity not found");
    }
}

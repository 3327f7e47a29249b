//! Instruction flags: parsed generically from `--name[=value]` words, then checked against
//! what each instruction accepts (BuildKit's `BFlags` rules).

use std::collections::BTreeMap;

use super::error::ParseErrorKind;

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagKind {
    /// `--link`, `--link=true|false`.
    Bool,
    /// `--from=x`, at most once.
    Str,
    /// `--mount=...`, repeatable.
    List,
}

/// The flags of one instruction after validation.
#[derive(Debug, Default)]
pub(crate) struct Flags {
    values: BTreeMap<&'static str, Vec<String>>,
}

/// A flag error and the raw flag word it is about (to point the caret at it).
pub(crate) type FlagError = (ParseErrorKind, String);

impl Flags {
    /// Checks `raw` (`--name=value` words) against `accepted`.
    pub(crate) fn parse(
        instruction: &str,
        raw: &[String],
        accepted: &[(&'static str, FlagKind)],
    ) -> Result<Flags, FlagError> {
        let mut flags = Flags::default();
        for word in raw {
            let fail = |kind| Err((kind, word.clone()));
            let body = word.strip_prefix("--").unwrap_or(word);
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(key, kind)) = accepted.iter().find(|(n, _)| *n == name) else {
                let allowed = if accepted.is_empty() {
                    "no flags".to_string()
                } else {
                    accepted
                        .iter()
                        .map(|(n, _)| format!("--{n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return fail(ParseErrorKind::UnknownFlag {
                    instruction: instruction.to_string(),
                    flag: name.to_string(),
                    allowed,
                });
            };
            if kind != FlagKind::List && flags.values.contains_key(key) {
                return fail(ParseErrorKind::DuplicateFlag(key.to_string()));
            }
            let value = match (kind, value) {
                (FlagKind::Bool, None) => "true".to_string(),
                (FlagKind::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
                    "true" | "false" => v.to_ascii_lowercase(),
                    "" => return fail(ParseErrorKind::MissingFlagValue(key.to_string())),
                    _ => {
                        return fail(ParseErrorKind::BadBoolFlag {
                            flag: key.to_string(),
                            value: v.to_string(),
                        });
                    }
                },
                (_, None) => return fail(ParseErrorKind::MissingFlagValue(key.to_string())),
                (_, Some(v)) => v.to_string(),
            };
            flags.values.entry(key).or_default().push(value);
        }
        Ok(flags)
    }

    /// The value of a string flag, if given.
    pub(crate) fn string(&self, name: &str) -> Option<String> {
        self.values.get(name).and_then(|v| v.first().cloned())
    }

    /// A bool flag: `None` when absent.
    pub(crate) fn bool(&self, name: &str) -> Option<bool> {
        self.string(name).map(|v| v == "true")
    }

    /// Every value of a repeatable flag, in order.
    pub(crate) fn list(&self, name: &str) -> Vec<String> {
        self.values.get(name).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COPY: &[(&str, FlagKind)] = &[
        ("from", FlagKind::Str),
        ("link", FlagKind::Bool),
        ("exclude", FlagKind::List),
    ];

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn accepts_and_types_values() {
        let f = Flags::parse(
            "COPY",
            &words(&["--from=a", "--link", "--exclude=x", "--exclude=y"]),
            COPY,
        )
        .unwrap();
        assert_eq!(f.string("from").as_deref(), Some("a"));
        assert_eq!(f.bool("link"), Some(true));
        assert_eq!(f.list("exclude"), vec!["x", "y"]);
    }

    #[test]
    fn rejects_bad_flags() {
        let err = |w: &[&str]| {
            Flags::parse("COPY", &words(w), COPY)
                .unwrap_err()
                .0
                .to_string()
        };
        assert_eq!(
            err(&["--chmod=1"]),
            "unknown flag: --chmod (COPY accepts --from, --link, --exclude)"
        );
        assert_eq!(
            err(&["--from=a", "--from=b"]),
            "duplicate flag specified: --from"
        );
        assert_eq!(err(&["--from"]), "missing a value on flag: --from");
        assert_eq!(
            err(&["--link=yes"]),
            "expecting boolean value for flag --link, not: yes"
        );
        assert_eq!(err(&["--link="]), "missing a value on flag: --link");
    }
}

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

    /// Each error in `e`'s chain says what failed, never its own source's text again.
    fn assert_each_cause_once(e: &(dyn Error + 'static)) {
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
        assert_eq!(
            Causes(e).to_string().matches(CAUSE).count(),
            1,
            "{}",
            Causes(e)
        );
    }

    const CAUSE: &str = "the-underlying-cause";

    fn io() -> io::Error {
        io::Error::other(CAUSE)
    }

    /// Issue 14: every error enum variant that has a source, built around an io::Error.
    #[test]
    fn no_error_message_repeats_its_cause() {
        use crate::build::{BuildError, cache::CacheError, context::ContextError};
        use crate::digest::Digest;
        use crate::image::ImageError;
        use crate::layer::LayerError;
        use crate::plan::ignore::IgnoreError;
        use crate::registry::RegistryError;
        use crate::store::StoreError;
        use std::path::PathBuf;

        let p = || PathBuf::from("/some/path");
        let d = Digest::of(b"x");
        let store_io = || StoreError::Io {
            action: "create",
            path: p(),
            source: io(),
        };
        let bad_json = || serde_json::from_slice::<u8>(CAUSE.as_bytes()).unwrap_err();
        let errors: Vec<Box<dyn Error>> = vec![
            Box::new(store_io()),
            Box::new(StoreError::Unpack {
                diff_id: d,
                source: Box::new(io()),
            }),
            Box::new(ImageError::Io {
                action: "read",
                path: p(),
                source: io(),
            }),
            Box::new(ImageError::Store(store_io())),
            Box::new(RegistryError::Io {
                what: "reading x".into(),
                source: io(),
            }),
            Box::new(LayerError::Source {
                path: p(),
                source: io(),
            }),
            Box::new(LayerError::Output(io())),
            Box::new(LayerError::Input(io())),
            Box::new(LayerError::Unpack {
                entry: "e".into(),
                dest: p(),
                source: io(),
            }),
            Box::new(IgnoreError::Read {
                path: p(),
                source: io(),
            }),
            Box::new(BuildError::Io {
                action: "creating",
                source: io(),
            }),
            Box::new(BuildError::Store(store_io())),
            Box::new(crate::build::step_failed(
                crate::dockerfile::Span::new(1, 1, 1),
                store_io(),
            )),
            Box::new(CacheError::Io {
                action: "write",
                path: p(),
                source: io(),
            }),
            Box::new(ContextError::Io {
                path: p(),
                source: io(),
            }),
        ];
        for e in &errors {
            assert_each_cause_once(e.as_ref());
        }
        // Causes that are not io errors: a manifest and a config that are not JSON.
        let manifest = crate::manifest::read(CAUSE.as_bytes(), None).unwrap_err();
        let json_text = bad_json().to_string();
        for e in [
            Box::new(ImageError::BadManifest {
                digest: d,
                source: manifest,
            }) as Box<dyn Error>,
            Box::new(ImageError::BadConfig {
                digest: d,
                source: crate::manifest::ConfigError(bad_json()),
            }),
            Box::new(RegistryError::UnreadableManifest {
                registry: "r.io".into(),
                what: "manifest r.io/a:1".into(),
                source: crate::manifest::read(CAUSE.as_bytes(), None).unwrap_err(),
            }),
            Box::new(RegistryError::CredentialsFile {
                path: p(),
                source: bad_json(),
            }),
        ] {
            assert!(!e.to_string().contains(&json_text), "{e}");
            assert!(Causes(e.as_ref()).to_string().contains(&json_text));
        }
    }
}

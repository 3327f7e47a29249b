//! Build arguments: `--build-arg` values, the predefined platform and proxy ARGs.

use std::collections::BTreeMap;

pub use crate::platform::Platform;

/// The proxy ARGs BuildKit passes to RUN without a declaration (kept out of cache keys).
pub const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// The automatic platform ARGs for a build/target platform pair.
pub fn platform_args(build: &Platform, target: &Platform) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (prefix, p) in [("BUILD", build), ("TARGET", target)] {
        m.insert(format!("{prefix}PLATFORM"), p.to_string());
        m.insert(format!("{prefix}OS"), p.os.clone());
        m.insert(format!("{prefix}ARCH"), p.architecture.clone());
        m.insert(
            format!("{prefix}VARIANT"),
            p.variant.clone().unwrap_or_default(),
        );
    }
    m
}

/// Names that never trigger the "build-arg not consumed" warning.
pub fn is_predefined(name: &str) -> bool {
    PROXY_ARGS.contains(&name)
        || name.starts_with("BUILDKIT_")
        || name == "SOURCE_DATE_EPOCH"
        || ["BUILD", "TARGET"].iter().any(|p| {
            ["PLATFORM", "OS", "ARCH", "VARIANT"]
                .iter()
                .any(|s| name == format!("{p}{s}"))
        })
}

/// A `--build-arg` word with no name (`=x`, or empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "build argument {0:?} has no name: use NAME=VALUE, or NAME to take it from the environment"
)]
pub struct BuildArgError(pub String);

/// Parses `--build-arg` words: `K=V`, or `K` alone to take `K` from the environment (skipped
/// when the environment does not have it, as docker does).
pub fn parse_build_args(
    words: &[String],
    environment: impl Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>, BuildArgError> {
    let mut out = BTreeMap::new();
    for w in words {
        match w.split_once('=') {
            Some(("", _)) => return Err(BuildArgError(w.clone())),
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None if w.is_empty() => return Err(BuildArgError(w.clone())),
            None => {
                if let Some(v) = environment(w) {
                    out.insert(w.clone(), v);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_and_args() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert!(Platform::parse("linux").is_err());
        let args = platform_args(&Platform::parse("linux/amd64").unwrap(), &p);
        assert_eq!(args["TARGETVARIANT"], "v8");
        assert_eq!(args["BUILDARCH"], "amd64");
        assert!(is_predefined("https_proxy") && is_predefined("TARGETOS") && !is_predefined("FOO"));
    }

    #[test]
    fn build_arg_words() {
        let env = |k: &str| (k == "HOME_X").then(|| "/h".to_string());
        let m = parse_build_args(
            &["A=1".into(), "B=".into(), "HOME_X".into(), "NOPE".into()],
            env,
        )
        .unwrap();
        assert_eq!(
            m.into_iter().collect::<Vec<_>>(),
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "".into()),
                ("HOME_X".into(), "/h".into())
            ]
        );
        assert_eq!(
            parse_build_args(&["=x".into()], env),
            Err(BuildArgError("=x".into()))
        );
        assert_eq!(
            parse_build_args(&["".into()], env),
            Err(BuildArgError("".into()))
        );
    }
}

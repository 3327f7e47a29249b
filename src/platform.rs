//! [`Platform`]: the os/architecture[/variant] an image is for, in OCI's words — one type for
//! `--platform`, the plan's `TARGETPLATFORM` args, index entries and image configs.
//!
//! Public API: [`Platform::host`], [`Platform::parse`] (also `FromStr`), [`Platform::matches`]
//! (does an index entry serve this platform), [`Platform::normalized`] (BuildKit's spelling,
//! `linux/arm64/v8` → `linux/arm64`), `Display` as `os/arch[/variant]`.

use std::fmt;
use std::str::FromStr;

/// `os/arch[/variant]`, as in `linux/arm64/v8`. Serialises as OCI's platform object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// A `--platform`-style string that is not `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/arm64")]
pub struct PlatformError(pub String);

/// A well-formed platform whose OS or architecture Go (so every image tool) does not know,
/// as containerd's platform parser refuses it: a typo like `linux/amd46`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {name:?} in platform {platform:?} (known: {known})")]
pub struct UnknownPlatform {
    pub platform: String,
    pub what: &'static str,
    pub name: String,
    pub known: String,
}

/// Go's GOOS values that images use.
const KNOWN_OS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "illumos",
    "ios",
    "js",
    "linux",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "wasip1",
    "windows",
];

/// Go's GOARCH values (and `arm64be`, `armbe` as containerd accepts them).
const KNOWN_ARCH: &[&str] = &[
    "386", "amd64", "arm", "arm64", "loong64", "mips", "mips64", "mips64le", "mipsle", "ppc64",
    "ppc64le", "riscv64", "s390x", "wasm",
];

impl Platform {
    /// The platform kiln runs on, in Go's GOOS/GOARCH names as images use them.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.map(Into::into),
        }
    }

    /// Parses `os/arch[/variant]` (letters, digits and `_` in each part).
    pub fn parse(s: &str) -> Result<Platform, PlatformError> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok =
            |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(ok) {
            return Err(PlatformError(s.to_string()));
        }
        Ok(Platform {
            os: parts[0].to_string(),
            architecture: parts[1].to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }

    /// `Ok` when Go knows the OS and the architecture (`--platform` values are checked so a
    /// typo is named, not looked for in every base image's index).
    pub fn check_known(&self) -> Result<(), UnknownPlatform> {
        let unknown = |what, name: &str, known: &[&str]| UnknownPlatform {
            platform: self.to_string(),
            what,
            name: name.to_string(),
            known: known.join(", "),
        };
        if !KNOWN_OS.contains(&self.os.as_str()) {
            return Err(unknown("OS", &self.os, KNOWN_OS));
        }
        if !KNOWN_ARCH.contains(&self.architecture.as_str()) {
            return Err(unknown("architecture", &self.architecture, KNOWN_ARCH));
        }
        Ok(())
    }

    /// Whether an index entry's platform serves this one. A wanted variant must match (arm64's
    /// `v8` is implied when an entry has none); no wanted variant accepts any.
    pub fn matches(&self, other: &Platform) -> bool {
        let norm = |p: &Platform| match (&p.variant, p.architecture.as_str()) {
            (None, "arm64") => Some("v8".to_string()),
            (v, _) => v.clone(),
        };
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant.is_none() || norm(self) == norm(other))
    }

    /// The platform as BuildKit spells it for build args: arm64's default `v8` is dropped.
    pub fn normalized(&self) -> Platform {
        let mut p = self.clone();
        if p.architecture == "arm64" && p.variant.as_deref() == Some("v8") {
            p.variant = None;
        }
        p
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = PlatformError;
    fn from_str(s: &str) -> Result<Platform, PlatformError> {
        Platform::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_displays_and_rejects() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert_eq!(p.normalized().to_string(), "linux/arm64");
        assert_eq!("linux/amd64".parse::<Platform>().unwrap().variant, None);
        for bad in ["linux", "linux/", "a/b/c/d", "linux/arm 64", ""] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn matching_implies_arm64_v8_and_accepts_any_variant_when_none_is_wanted() {
        let p = |s: &str| Platform::parse(s).unwrap();
        assert!(p("linux/arm64/v8").matches(&p("linux/arm64")));
        assert!(p("linux/arm").matches(&p("linux/arm/v6")));
        assert!(!p("linux/arm/v7").matches(&p("linux/arm/v6")));
        assert!(!p("linux/amd64").matches(&p("linux/arm64")));
    }

    #[test]
    fn typos_in_the_os_or_architecture_are_named() {
        let p = |s: &str| Platform::parse(s).unwrap();
        assert!(p("linux/arm64/v8").check_known().is_ok());
        assert!(p("windows/amd64").check_known().is_ok());
        let err = p("linux/amd46").check_known().unwrap_err().to_string();
        assert!(
            err.contains("architecture \"amd46\"") && err.contains("amd64, arm"),
            "{err}"
        );
        let err = p("linx/amd64").check_known().unwrap_err().to_string();
        assert!(err.contains("OS \"linx\""), "{err}");
    }

    #[test]
    fn serialises_as_the_oci_platform_object() {
        let json = serde_json::to_string(&Platform::parse("linux/amd64").unwrap()).unwrap();
        assert_eq!(json, r#"{"os":"linux","architecture":"amd64"}"#);
        let back: Platform =
            serde_json::from_str(r#"{"os":"linux","architecture":"arm","variant":"v7"}"#).unwrap();
        assert_eq!(back.to_string(), "linux/arm/v7");
    }
}

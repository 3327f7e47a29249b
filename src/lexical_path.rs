//! Cleaning `/`-separated paths by their names alone, never by looking at a filesystem (so
//! never following a symlink): the one implementation of Go's `path.Clean`, which Docker and
//! BuildKit apply to `.dockerignore` patterns, COPY sources and tar entry names.
//!
//! API: [`clean`] (Go's `path.Clean`) and [`in_root`] (a path inside a root, relative to it,
//! `..` stopping at the root). Depends on nothing: the bottom of the module graph.

/// Go's `path.Clean`: drops empty and `.` elements, resolves `..` against the element before
/// it (never above `/` for a rooted path; kept at the front of a relative one), removes a
/// trailing `/`; an empty result is `.`.
pub fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            _ => parts.push(part),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// `path` as a place inside a root, relative to it: cleaned as if it started at `/`, so no
/// `..` climbs out; no leading or trailing `/`; the root itself is `""`. Docker's reading of
/// COPY sources and of tar entry names.
pub fn in_root(path: &str) -> String {
    let rooted = clean(&format!("/{path}"));
    rooted[1..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_is_gos_path_clean() {
        for (input, want) in [
            ("", "."),
            (".", "."),
            ("a/", "a"),
            ("./a//b/./c/", "a/b/c"),
            ("a/../../b", "../b"),
            ("../../a", "../../a"),
            ("/../a", "/a"),
            ("/", "/"),
            ("//", "/"),
            ("a/b/..", "a"),
            ("a/..", "."),
        ] {
            assert_eq!(clean(input), want, "{input:?}");
        }
    }

    #[test]
    fn in_root_never_leaves_the_root() {
        for (input, want) in [
            ("", ""),
            ("/", ""),
            ("./", ""),
            ("a/b/", "a/b"),
            ("/a//./b", "a/b"),
            ("../../etc/passwd", "etc/passwd"),
            ("a/../../b", "b"),
            ("a/b/../c", "a/c"),
            ("..", ""),
        ] {
            assert_eq!(in_root(input), want, "{input:?}");
        }
    }
}

//! User-namespace id maps ([`LayerIdMap`]): planned from `/etc/subuid`/`/etc/subgid`, written through
//! `newuidmap`/`newgidmap` (a range) or directly (a single id, after `setgroups deny`).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::SandboxError;
use super::error::IdMapError;

use crate::layer::{IdMap, IdRange, LayerIdMap};

/// The map for the user namespace of root in a container that refuses mount namespaces
/// (podman's default; `Probe::own_ids`) and, when only a single id can be mapped, the
/// warning to show. With CAP_SETUID and CAP_SETGID every id of kiln's own namespace is
/// mapped to itself and written directly: the step owns the same ids it would in chroot
/// mode, so the image is the same. Otherwise [`plan_rootless`].
pub(crate) fn plan(uid: u32, gid: u32) -> (LayerIdMap, Option<String>) {
    use super::security::caps;
    if caps::have(&[caps::SETUID, caps::SETGID]) {
        let read = |p: &str| std::fs::read_to_string(p).ok().and_then(|t| own_ranges(&t));
        if let (Some(uids), Some(gids)) = (read("/proc/self/uid_map"), read("/proc/self/gid_map")) {
            return (pair(uids, gids), None);
        }
    }
    plan_rootless(uid, gid)
}

/// Every id of a namespace (its `/proc/self/uid_map` text) mapped to itself.
fn own_ranges(map: &str) -> Option<Vec<IdRange>> {
    let ranges: Option<Vec<IdRange>> = map
        .lines()
        .map(|l| {
            let f: Vec<u32> = l
                .split_whitespace()
                .map(|n| n.parse().ok())
                .collect::<Option<_>>()?;
            match f[..] {
                [inside, _, count] if count > 0 => Some(one(inside, inside, count)),
                _ => None,
            }
        })
        .collect();
    ranges.filter(|r| !r.is_empty())
}

/// The map for a rootless step of a user without CAP_SETUID/CAP_SETGID: a subordinate range
/// through `newuidmap`/`newgidmap`, else the user's own id alone (with a warning).
pub(crate) fn plan_rootless(uid: u32, gid: u32) -> (LayerIdMap, Option<String>) {
    use super::security::caps;
    if uid == 0 && !caps::have(&[caps::SETUID, caps::SETGID]) {
        // Root without CAP_SETUID/CAP_SETGID (`--cap-drop=all`): newuidmap would not help.
        let warning = "rootless sandbox maps only uid 0/gid 0: kiln runs as root without \
                       CAP_SETUID and CAP_SETGID, so no other id can be mapped; files owned \
                       by other ids cannot be created (chown, USER 1000 fail). To fix, give \
                       the container those two capabilities (e.g. --cap-add=SETUID,SETGID)";
        return (
            pair(vec![one(0, uid, 1)], vec![one(0, gid, 1)]),
            Some(warning.to_string()),
        );
    }
    let name = user_name(uid);
    let sub_u = subordinate_range(Path::new("/etc/subuid"), uid, name.as_deref());
    let sub_g = subordinate_range(Path::new("/etc/subgid"), uid, name.as_deref());
    let helpers = find_in_path("newuidmap").is_some() && find_in_path("newgidmap").is_some();
    match (sub_u, sub_g, helpers) {
        (Some((us, uc)), Some((gs, gc)), true) => (
            pair(
                vec![one(0, uid, 1), one(1, us, uc)],
                vec![one(0, gid, 1), one(1, gs, gc)],
            ),
            None,
        ),
        (su, sg, helpers) => {
            let why = if !helpers {
                "newuidmap/newgidmap are missing (Debian package `uidmap`)".to_string()
            } else if su.is_none() {
                "/etc/subuid has no range for this user".to_string()
            } else if sg.is_none() {
                "/etc/subgid has no range for this user".to_string()
            } else {
                unreachable!("all present is handled above")
            };
            let who = name.unwrap_or_else(|| uid.to_string());
            let fix = if helpers {
                format!("`usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {who}`")
            } else {
                "`apt-get install uidmap` (or your distribution's shadow-utils)".to_string()
            };
            let warning = format!(
                "rootless sandbox maps only uid {uid}/gid {gid} to root: {why}; files owned by \
                 other ids cannot be created (chown, USER 1000 fail). To fix, as root: {fix}"
            );
            (
                pair(vec![one(0, uid, 1)], vec![one(0, gid, 1)]),
                Some(warning),
            )
        }
    }
}

fn one(image: u32, host: u32, count: u32) -> IdRange {
    IdRange { image, host, count }
}

/// The pair of maps of `uids` and `gids`.
fn pair(uids: Vec<IdRange>, gids: Vec<IdRange>) -> LayerIdMap {
    LayerIdMap {
        uids: IdMap::new(uids),
        gids: IdMap::new(gids),
    }
}

/// Writes the maps of the process `pid` (which has just unshared its user namespace).
pub(crate) fn apply(pid: u32, map: &LayerIdMap) -> Result<(), SandboxError> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    if map.is_single() {
        write_proc(&proc.join("setgroups"), "deny")?;
        write_proc(&proc.join("uid_map"), &lines(&map.uids))?;
        write_proc(&proc.join("gid_map"), &lines(&map.gids))?;
        return Ok(());
    }
    if map.is_own_ids() {
        // kiln's own ids, written with its CAP_SETUID/CAP_SETGID (see `plan`).
        write_proc(&proc.join("uid_map"), &lines(&map.uids))?;
        write_proc(&proc.join("gid_map"), &lines(&map.gids))?;
        return Ok(());
    }
    run_helper("newuidmap", pid, &map.uids)?;
    run_helper("newgidmap", pid, &map.gids)
}

/// The `/proc/<pid>/uid_map` text of a map.
fn lines(map: &IdMap) -> String {
    map.ranges()
        .iter()
        .map(|r| format!("{} {} {}\n", r.image, r.host, r.count))
        .collect()
}

fn write_proc(path: &Path, text: &str) -> Result<(), SandboxError> {
    std::fs::write(path, text)
        .map_err(|source| IdMapError::Write {
            path: path.to_path_buf(),
            source,
        })
        .map_err(SandboxError::from)
}

fn run_helper(helper: &'static str, pid: u32, map: &IdMap) -> Result<(), SandboxError> {
    let mut cmd = Command::new(helper);
    cmd.arg(pid.to_string());
    for r in map.ranges() {
        cmd.args([r.image, r.host, r.count].map(|n| n.to_string()));
    }
    let out = cmd
        .output()
        .map_err(|source| IdMapError::Run { helper, source })?;
    if out.status.success() {
        return Ok(());
    }
    Err(IdMapError::Failed {
        helper,
        pid,
        status: out.status,
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    }
    .into())
}

/// The first `start:count` range of `/etc/subuid`-style `file` for this user (by name or uid).
fn subordinate_range(file: &Path, uid: u32, name: Option<&str>) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(file).ok()?;
    parse_subordinate(&text, uid, name)
}

fn parse_subordinate(text: &str, uid: u32, name: Option<&str>) -> Option<(u32, u32)> {
    text.lines().find_map(|line| {
        let mut parts = line.trim().split(':');
        let who = parts.next()?;
        let start: u32 = parts.next()?.parse().ok()?;
        let count: u32 = parts.next()?.parse().ok()?;
        let matches = Some(who) == name || who.parse::<u32>().ok() == Some(uid);
        (matches && count > 0).then_some((start, count))
    })
}

/// The login name of `uid` from the host's `/etc/passwd`.
fn user_name(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[0].to_string())
    })
}

pub(crate) fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_match_by_name_or_uid_and_skip_garbage() {
        let text = "bad line\nalice:100000:65536\n1001:200000:1000\nbob:x:1\n";
        assert_eq!(
            parse_subordinate(text, 1000, Some("alice")),
            Some((100000, 65536))
        );
        assert_eq!(
            parse_subordinate(text, 1001, Some("carol")),
            Some((200000, 1000))
        );
        assert_eq!(parse_subordinate(text, 1002, Some("bob")), None);
    }

    #[test]
    fn own_ids_map_to_themselves() {
        let rootful = own_ranges("         0          0 4294967295\n").unwrap();
        assert_eq!(rootful, vec![one(0, 0, u32::MAX)]);
        // A rootless podman container: the ids are those of its own namespace.
        let rootless = own_ranges("0 1000 1\n1 100000 65536\n").unwrap();
        assert_eq!(rootless, vec![one(0, 0, 1), one(1, 1, 65536)]);
        assert_eq!(own_ranges(""), None);
        assert_eq!(own_ranges("0 0\n"), None);
        let map = pair(rootless.clone(), rootless);
        assert!(map.is_own_ids() && !map.is_single());
        assert_eq!(map.image_uid(4242), Some(4242));
        let subordinate = pair(
            vec![one(0, 1000, 1), one(1, 100000, 65536)],
            vec![one(0, 1000, 1), one(1, 100000, 65536)],
        );
        assert!(!subordinate.is_own_ids());
    }
}

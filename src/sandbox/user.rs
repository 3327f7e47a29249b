//! `USER name|uid[:group|gid]` resolved through the rootfs's `/etc/passwd` and `/etc/group`,
//! the way Docker does: a numeric uid needs no entry (gid 0, HOME `/`), a name must exist.
//! Supplementary groups follow moby/sys `GetExecUser`: only with no explicit group, and only
//! the `/etc/group` entries that list the user by name (the primary gid is not added).

/// The credentials a step's command runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

pub(crate) fn resolve(
    user: Option<&str>,
    passwd: &str,
    group: &str,
) -> Result<Credentials, String> {
    let spec = user.filter(|u| !u.is_empty()).unwrap_or("0");
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entries: Vec<PasswdEntry> = passwd.lines().filter_map(parse_passwd).collect();
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => entries.iter().find(|e| e.uid == uid),
        Err(_) => Some(
            entries
                .iter()
                .find(|e| e.name == user_part)
                .ok_or_else(|| {
                    format!("user {user_part:?} not found in the image's /etc/passwd")
                })?,
        ),
    };
    let uid = entry.map_or_else(|| user_part.parse().unwrap_or(0), |e| e.uid);
    let home = entry.map_or("/", |e| e.home).to_string();
    let (gid, groups) = match group_part {
        Some(g) => (resolve_group(g, group)?, Vec::new()),
        None => {
            let gid = entry.map_or(0, |e| e.gid);
            let name = entry.map(|e| e.name);
            (gid, supplementary(name, group))
        }
    };
    Ok(Credentials {
        uid,
        gid,
        groups,
        home,
    })
}

fn parse_passwd(line: &str) -> Option<PasswdEntry<'_>> {
    let f: Vec<&str> = line.split(':').collect();
    if f.len() < 7 {
        return None;
    }
    Some(PasswdEntry {
        name: f[0],
        uid: f[2].parse().ok()?,
        gid: f[3].parse().ok()?,
        home: f[5],
    })
}

/// (name, gid, members) of each well-formed `/etc/group` line.
fn group_entries(group: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    group.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 {
            return None;
        }
        let members = f[3].split(',').filter(|m| !m.is_empty()).collect();
        Some((f[0], f[2].parse().ok()?, members))
    })
}

fn resolve_group(spec: &str, group: &str) -> Result<u32, String> {
    if let Ok(gid) = spec.parse() {
        return Ok(gid);
    }
    group_entries(group)
        .find(|(name, _, _)| *name == spec)
        .map(|(_, gid, _)| gid)
        .ok_or_else(|| format!("group {spec:?} not found in the image's /etc/group"))
}

/// The gids of the groups whose member list names `user`, in file order. The primary gid is
/// not among them unless a group lists the user (runc sets exactly these with setgroups).
fn supplementary(user: Option<&str>, group: &str) -> Vec<u32> {
    let Some(user) = user else {
        return Vec::new();
    };
    group_entries(group)
        .filter(|(_, _, members)| members.contains(&user))
        .map(|(_, gid, _)| gid)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\nbroken\napp:x:1000:1001::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nappgrp:x:1001:\nwheel:x:10:app,root\ndocker:x:999:app\n";

    #[test]
    fn names_numbers_and_groups_resolve_like_docker() {
        let root = resolve(None, PASSWD, GROUP).unwrap();
        assert_eq!((root.uid, root.gid, root.home.as_str()), (0, 0, "/root"));
        assert_eq!(root.groups, vec![10]);
        let app = resolve(Some("app"), PASSWD, GROUP).unwrap();
        assert_eq!((app.uid, app.gid), (1000, 1001));
        assert_eq!(app.groups, vec![10, 999]);
        assert_eq!(app.home, "/home/app");
        // A uid with a passwd entry gets that user's groups, by name.
        assert_eq!(
            resolve(Some("1000"), PASSWD, GROUP).unwrap().groups,
            [10, 999]
        );
        let numeric = resolve(Some("4242"), PASSWD, GROUP).unwrap();
        assert_eq!(
            (numeric.uid, numeric.gid, numeric.home.as_str()),
            (4242, 0, "/")
        );
        assert!(numeric.groups.is_empty());
        let explicit = resolve(Some("1000:docker"), PASSWD, GROUP).unwrap();
        assert_eq!((explicit.uid, explicit.gid), (1000, 999));
        assert!(explicit.groups.is_empty());
        assert_eq!(resolve(Some("app:7"), PASSWD, GROUP).unwrap().gid, 7);
    }

    #[test]
    fn unknown_names_are_errors_that_say_where_they_looked() {
        let err = resolve(Some("nobody"), PASSWD, GROUP).unwrap_err();
        assert!(
            err.contains("\"nobody\"") && err.contains("/etc/passwd"),
            "{err}"
        );
        let err = resolve(Some("app:nogroup"), PASSWD, GROUP).unwrap_err();
        assert!(err.contains("/etc/group"), "{err}");
    }

    /// Docker's `id` for `USER svc` shows only the /etc/group memberships, not the primary
    /// gid again (unless the user's own group lists it).
    #[test]
    fn the_primary_gid_is_not_a_supplementary_group_unless_listed() {
        let passwd = "svc:x:4321:4321::/home/svc:/bin/sh\n";
        let group = "svc:x:4321:\nextra:x:5555:svc\n";
        let svc = resolve(Some("svc"), passwd, group).unwrap();
        assert_eq!((svc.uid, svc.gid), (4321, 4321));
        assert_eq!(svc.groups, [5555]);
        let listed = "svc:x:4321:svc\nextra:x:5555:svc\n";
        assert_eq!(
            resolve(Some("svc"), passwd, listed).unwrap().groups,
            [4321, 5555]
        );
        let alone = resolve(Some("svc"), passwd, "svc:x:4321:\n").unwrap();
        assert!(alone.groups.is_empty());
    }
}

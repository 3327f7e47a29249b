//! `--chown=user[:group]` (COPY, ADD) and a WORKDIR's owner: names resolved through the
//! image's own `/etc/passwd` and `/etc/group`.

/// A `--chown` name the image does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum OwnerError {
    #[error("user {0:?} is not in the image's /etc/passwd")]
    User(String),
    #[error("group {0:?} is not in the image's /etc/group")]
    Group(String),
}

/// `--chown=user[:group]`: numeric ids as they are, names through the image's passwd/group.
/// `read` gives the text of an image file (`etc/passwd`), as the merged image has it.
pub(super) fn resolve_owner(
    spec: &str,
    read: &dyn Fn(&str) -> Option<String>,
) -> Result<(u64, u64), OwnerError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let uid = match user.parse::<u64>() {
        Ok(n) => n,
        Err(_) => {
            lookup(read, "etc/passwd", user, 2).ok_or_else(|| OwnerError::User(user.to_string()))?
        }
    };
    let gid = match group {
        None => match user.parse::<u64>() {
            // A numeric user without a group gets the same number as gid (Docker's rule).
            Ok(n) => n,
            Err(_) => lookup(read, "etc/passwd", user, 3).unwrap_or(uid),
        },
        Some(g) => match g.parse::<u64>() {
            Ok(n) => n,
            Err(_) => {
                lookup(read, "etc/group", g, 2).ok_or_else(|| OwnerError::Group(g.to_string()))?
            }
        },
    };
    Ok((uid, gid))
}

/// Field `field` (0-based) of the line for `name` in the image's `file`.
fn lookup(
    read: &dyn Fn(&str) -> Option<String>,
    file: &str,
    name: &str,
    field: usize,
) -> Option<u64> {
    let text = read(file)?;
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))?
        .get(field)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chown_resolves_names_through_the_images_passwd_and_group() {
        let read = |f: &str| match f {
            "etc/passwd" => Some("app:x:1000:1000::/:/bin/sh\nnog:x:1001:4242::/:/bin/sh\n".into()),
            "etc/group" => Some("app:x:1000:\nstaff:x:50:\n".into()),
            _ => None,
        };
        assert_eq!(resolve_owner("7", &read), Ok((7, 7)));
        assert_eq!(resolve_owner("7:8", &read), Ok((7, 8)));
        assert_eq!(resolve_owner("app", &read), Ok((1000, 1000)));
        // No group named like the user: the passwd entry's gid.
        assert_eq!(resolve_owner("nog", &read), Ok((1001, 4242)));
        assert_eq!(resolve_owner("nog:staff", &read), Ok((1001, 50)));
        assert_eq!(
            resolve_owner("app:wheel", &read).unwrap_err(),
            OwnerError::Group("wheel".into())
        );
        assert_eq!(
            resolve_owner("ghost", &|_: &str| None).unwrap_err(),
            OwnerError::User("ghost".into())
        );
    }
}

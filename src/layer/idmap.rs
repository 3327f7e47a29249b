//! uid/gid maps between the image (inside a user namespace) and the host: one [`IdMap`] per
//! kind of id, and [`LayerIdMap`], the uid and gid maps a user namespace (a RUN step) has.

/// One line of a `/proc/<pid>/uid_map`: image ids `image..image+count` are host ids
/// `host..host+count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdRange {
    pub image: u32,
    pub host: u32,
    pub count: u32,
}

/// A line of an id map that is not `image host count` (three numbers below 2^32).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("id map line {line}: expected `image host count` (three numbers), got {text:?}")]
pub struct IdMapError {
    /// 1-based.
    pub line: usize,
    pub text: String,
}

/// A set of [`IdRange`]s; an id outside every range is unmapped.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct IdMap {
    ranges: Vec<IdRange>,
}

impl IdMap {
    pub fn new(ranges: Vec<IdRange>) -> IdMap {
        IdMap { ranges }
    }

    /// Parses the `/proc/<pid>/uid_map` text form: one `image host count` triple per line.
    pub fn parse(text: &str) -> Result<IdMap, IdMapError> {
        let mut ranges = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let bad = || IdMapError {
                line: n + 1,
                text: line.to_string(),
            };
            let nums: Vec<u32> = line
                .split_whitespace()
                .map(|w| w.parse::<u32>())
                .collect::<Result<_, _>>()
                .map_err(|_| bad())?;
            match nums[..] {
                [image, host, count] => ranges.push(IdRange { image, host, count }),
                _ => return Err(bad()),
            }
        }
        Ok(IdMap { ranges })
    }

    pub fn ranges(&self) -> &[IdRange] {
        &self.ranges
    }

    /// The image id a host id shows as, if it is mapped.
    pub fn host_to_image(&self, host: u64) -> Option<u64> {
        self.ranges.iter().find_map(|r| {
            let off = host.checked_sub(u64::from(r.host))?;
            (off < u64::from(r.count)).then(|| u64::from(r.image) + off)
        })
    }

    /// The host id an image id is stored as, if it is mapped.
    pub fn image_to_host(&self, image: u64) -> Option<u64> {
        self.ranges.iter().find_map(|r| {
            let off = image.checked_sub(u64::from(r.image))?;
            (off < u64::from(r.count)).then(|| u64::from(r.host) + off)
        })
    }

    /// Every range maps ids to themselves (and there is one).
    fn maps_to_itself(&self) -> bool {
        !self.ranges.is_empty() && self.ranges.iter().all(|r| r.image == r.host)
    }
}

/// The uid and gid maps of a user namespace, in `/proc/<pid>/uid_map` form (image id, host id,
/// count): what a RUN step ran with and what the layer writer translates its upper dir's host
/// ids through. Both empty is the identity (no user namespace: chroot mode).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerIdMap {
    pub uids: IdMap,
    pub gids: IdMap,
}

impl LayerIdMap {
    /// No user namespace: ids are the host's.
    pub fn is_identity(&self) -> bool {
        self.uids.ranges.is_empty() && self.gids.ranges.is_empty()
    }

    /// Only the caller's own id is mapped (no subordinate range).
    pub fn is_single(&self) -> bool {
        matches!(self.uids.ranges[..], [IdRange { count: 1, .. }])
    }

    /// Every range maps ids to themselves: kiln's own ids, mapped with its CAP_SETUID and
    /// CAP_SETGID inside a container (see `sandbox::idmap::plan`).
    pub fn is_own_ids(&self) -> bool {
        self.uids.maps_to_itself() && self.gids.maps_to_itself() && !self.is_single()
    }

    /// The image uid a host uid (as found in the upper dir) stands for; any uid under the
    /// identity.
    pub fn image_uid(&self, host: u32) -> Option<u32> {
        image_id(&self.uids, self.is_identity(), host)
    }

    /// The image gid a host gid stands for; any gid under the identity.
    pub fn image_gid(&self, host: u32) -> Option<u32> {
        image_id(&self.gids, self.is_identity(), host)
    }
}

fn image_id(map: &IdMap, identity: bool, host: u32) -> Option<u32> {
    if identity {
        return Some(host);
    }
    map.host_to_image(u64::from(host))
        .and_then(|id| u32::try_from(id).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_both_ways_and_refuses_ids_outside_the_ranges() {
        let m = IdMap::parse("0 1000 1\n1 100000 65536\n").unwrap();
        assert_eq!(m.host_to_image(1000), Some(0));
        assert_eq!(m.host_to_image(100000), Some(1));
        assert_eq!(m.host_to_image(100999), Some(1000));
        assert_eq!(m.host_to_image(999), None);
        assert_eq!(m.host_to_image(165536), None);
        assert_eq!(m.image_to_host(0), Some(1000));
        assert_eq!(m.image_to_host(65536), Some(165535));
        assert_eq!(m.image_to_host(65537), None);
        let err = |line: usize, text: &str| {
            Err(IdMapError {
                line,
                text: text.into(),
            })
        };
        assert_eq!(IdMap::parse("0 1"), err(1, "0 1"));
        assert_eq!(IdMap::parse("0 0 1\n a b c "), err(2, "a b c"));
        assert_eq!(IdMap::parse("0 0 4294967296"), err(1, "0 0 4294967296"));
    }

    fn range(image: u32, host: u32, count: u32) -> IdRange {
        IdRange { image, host, count }
    }

    #[test]
    fn a_pair_of_maps_knows_its_kind_and_finds_image_ids() {
        let sub = IdMap::new(vec![range(0, 1000, 1), range(1, 100000, 65536)]);
        let map = LayerIdMap {
            uids: sub.clone(),
            gids: IdMap::new(vec![range(0, 1000, 1)]),
        };
        assert_eq!(map.image_uid(1000), Some(0));
        assert_eq!(map.image_uid(100999), Some(1000));
        assert_eq!(map.image_uid(5), None);
        assert_eq!(map.image_gid(1000), Some(0));
        assert!(!map.is_single() && !map.is_own_ids() && !map.is_identity());
        let identity = LayerIdMap::default();
        assert!(identity.is_identity());
        assert_eq!(identity.image_uid(7), Some(7));
        let own = IdMap::new(vec![range(0, 0, 1), range(1, 1, 65536)]);
        let own = LayerIdMap {
            uids: own.clone(),
            gids: own,
        };
        assert!(own.is_own_ids() && !own.is_single());
        assert_eq!(own.image_uid(4242), Some(4242));
        let single = IdMap::new(vec![range(0, 1000, 1)]);
        let single = LayerIdMap {
            uids: single.clone(),
            gids: single,
        };
        assert!(single.is_single() && !single.is_own_ids());
    }

    #[test]
    fn a_pair_of_maps_survives_json() {
        let map = LayerIdMap {
            uids: IdMap::new(vec![range(0, 1000, 1), range(1, 100000, 65536)]),
            gids: IdMap::new(vec![range(0, 1000, 1)]),
        };
        let json = serde_json::to_string(&map).unwrap();
        assert_eq!(serde_json::from_str::<LayerIdMap>(&json).unwrap(), map);
    }
}

//! uid/gid maps between the image (inside a user namespace) and the host.

/// One line of a `/proc/<pid>/uid_map`: image ids `image..image+count` are host ids
/// `host..host+count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
}

//! The one compression vocabulary: the algorithm of a layer blob (what a manifest says, with its
//! media types) and the encoding the writer uses for a new blob (the algorithm and its level).

use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use super::LayerError;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (deflate).
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// The name used in cache keys, store entries and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// The algorithm a [`Compression::name`] names.
    pub fn from_name(name: &str) -> Option<Compression> {
        [Compression::None, Compression::Gzip, Compression::Zstd]
            .into_iter()
            .find(|c| c.name() == name)
    }

    /// The levels the writer accepts (`None` for a plain tar, which has none).
    pub fn levels(self) -> Option<RangeInclusive<i32>> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some(0..=9),
            Compression::Zstd => Some(1..=22),
        }
    }

    /// The level used when none is given. gzip 5, not zlib's customary 6: with zlib-rs
    /// (zlib-ng's parameters) level 6 searches hash chains four times as long for output that
    /// is 0.3 % smaller on a tree of Debian binaries and libraries (62 vs 74 MB/s per core) and
    /// 11 % smaller on very repetitive text (24 vs 66 MB/s). Level 5 layers come out the size of
    /// buildah's (pgzip at its default level): 726 vs 727 MiB for the benchmark's w2 layer.
    /// docs/performance.md has the measurements.
    pub fn default_level(self) -> i32 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 5,
            Compression::Zstd => 3,
        }
    }

    /// The OCI media type of a layer blob compressed this way.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// The Docker v2 schema 2 media type of a layer blob compressed this way; Docker's format
    /// has none for zstd.
    pub fn docker_media_type(self) -> Option<&'static str> {
        match self {
            Compression::None => Some("application/vnd.docker.image.rootfs.diff.tar"),
            Compression::Gzip => Some("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Compression::Zstd => None,
        }
    }

    /// Reads the compression from a layer media type of either format (`None` when it is not
    /// a layer media type kiln reads).
    pub fn of_media_type(media_type: &str) -> Option<Compression> {
        let is_layer = media_type.starts_with("application/vnd.oci.image.layer.")
            || media_type.starts_with("application/vnd.docker.image.rootfs.");
        if !is_layer {
            None
        } else if media_type.ends_with("gzip") {
            Some(Compression::Gzip)
        } else if media_type.ends_with("zstd") {
            Some(Compression::Zstd)
        } else if media_type.ends_with(".tar") {
            Some(Compression::None)
        } else {
            None
        }
    }
}

/// How the layer writer compresses a new blob: the algorithm and a level it accepts (checked
/// when made, so a writer never sees an out-of-range level). `Encoding::default()` is gzip
/// level 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Encoding {
    compression: Compression,
    level: i32,
}

impl Encoding {
    /// `compression` at `level`, or at its default level when `None`. A plain tar takes no
    /// level but 0.
    pub fn new(compression: Compression, level: Option<i32>) -> Result<Encoding, LayerError> {
        let level = level.unwrap_or_else(|| compression.default_level());
        let fits = match compression.levels() {
            Some(levels) => levels.contains(&level),
            None => level == 0,
        };
        if !fits {
            return Err(LayerError::Level(i64::from(level)));
        }
        Ok(Encoding { compression, level })
    }

    /// A plain tar.
    pub fn plain() -> Encoding {
        Encoding {
            compression: Compression::None,
            level: 0,
        }
    }

    pub fn compression(self) -> Compression {
        self.compression
    }

    pub fn level(self) -> i32 {
        self.level
    }
}

impl Default for Encoding {
    fn default() -> Self {
        Encoding {
            compression: Compression::Gzip,
            level: Compression::Gzip.default_level(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_out_of_range_are_refused_when_the_encoding_is_made() {
        assert!(matches!(
            Encoding::new(Compression::Gzip, Some(10)),
            Err(LayerError::Level(10))
        ));
        assert!(matches!(
            Encoding::new(Compression::Zstd, Some(0)),
            Err(LayerError::Level(0))
        ));
        assert!(Encoding::new(Compression::None, Some(3)).is_err());
        assert_eq!(
            Encoding::new(Compression::None, None).unwrap(),
            Encoding::plain()
        );
        assert_eq!(Encoding::new(Compression::Zstd, None).unwrap().level(), 3);
        assert_eq!(Encoding::default().level(), 5);
    }

    #[test]
    fn names_and_media_types_round_trip() {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            assert_eq!(Compression::from_name(c.name()), Some(c));
            assert_eq!(Compression::of_media_type(c.oci_media_type()), Some(c));
            if let Some(docker) = c.docker_media_type() {
                assert_eq!(Compression::of_media_type(docker), Some(c));
            }
        }
        assert_eq!(Compression::of_media_type("application/json"), None);
        assert_eq!(
            Compression::of_media_type("application/vnd.oci.image.layer.v1.tar+lz4"),
            None
        );
    }
}

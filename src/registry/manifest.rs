//! Manifests as the registry serves them (bytes, digest, media type) and platform selection;
//! the bytes are read by [`crate::manifest`], the reader every module shares.

use crate::digest::Digest;
pub use crate::manifest::{
    DOCKER_LIST, DOCKER_MANIFEST, Descriptor, MANIFEST_ACCEPT, MAX_MANIFEST, ManifestError,
    OCI_INDEX, OCI_MANIFEST, Parsed,
};

/// Raw manifest bytes with their digest and media type; the bytes are what the digest covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

impl Manifest {
    /// Wraps bytes, computing their digest; the media type comes from the body when `given` is
    /// missing or generic (some registries answer `application/json`).
    pub fn from_bytes(bytes: Vec<u8>, given: Option<&str>) -> Manifest {
        Manifest {
            digest: Digest::of(&bytes),
            media_type: crate::manifest::media_type_of(&bytes, given),
            bytes,
        }
    }

    /// Parses the body as an image manifest or an index (see [`crate::manifest::read`] for
    /// what is accepted).
    pub fn parse(&self) -> Result<Parsed, ManifestError> {
        Ok(crate::manifest::read(&self.bytes, Some(&self.media_type))?.parsed)
    }
}

pub use crate::manifest::{available_platforms, select_platform};
pub use crate::platform::Platform;

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(platform: &str, n: u8) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: Digest::of(&[n]),
            size: 1,
            platform: Some(platform.parse().unwrap()),
        }
    }

    #[test]
    fn platform_parse_and_match() {
        let p: Platform = "linux/arm64".parse().unwrap();
        assert!(p.matches(&"linux/arm64/v8".parse().unwrap()));
        let v8: Platform = "linux/arm64/v8".parse().unwrap();
        assert!(v8.matches(&"linux/arm64".parse().unwrap()));
        let v7: Platform = "linux/arm/v7".parse().unwrap();
        assert!(!v7.matches(&"linux/arm/v6".parse().unwrap()));
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux/amd64/v2/x".parse::<Platform>().is_err());
        assert_eq!(v7.to_string(), "linux/arm/v7");
    }

    #[test]
    fn selects_platform_or_lists_what_exists() {
        let m = vec![
            desc("linux/amd64", 1),
            desc("linux/arm/v6", 2),
            desc("linux/arm/v7", 3),
        ];
        let got = select_platform(&m, &"linux/arm/v7".parse().unwrap()).unwrap();
        assert_eq!(got.digest, Digest::of(&[3]));
        assert!(select_platform(&m, &"windows/amd64".parse().unwrap()).is_none());
        assert_eq!(
            available_platforms(&m),
            "linux/amd64, linux/arm/v6, linux/arm/v7"
        );
    }

    #[test]
    fn parses_docker_manifest_and_refuses_schema1() {
        let d = Digest::of(b"x");
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"a","digest":"{d}","size":1}},"layers":[{{"mediaType":"b","digest":"{d}","size":1}}]}}"#
        );
        let m = Manifest::from_bytes(body.into_bytes(), Some("application/json"));
        assert_eq!(m.media_type, DOCKER_MANIFEST);
        match m.parse().unwrap() {
            Parsed::Image { layers, .. } => assert_eq!(layers.len(), 1),
            other => panic!("{other:?}"),
        }
        let s1 = Manifest::from_bytes(br#"{"schemaVersion":1}"#.to_vec(), Some(DOCKER_MANIFEST));
        let err = s1.parse().unwrap_err();
        assert!(err.to_string().contains("schema version 1"), "{err}");
    }

    /// Pull (which has the registry's `Content-Type`) and GC (which has only the stored bytes)
    /// must see the same references in every manifest pull accepts: were GC to see fewer, a
    /// prune would delete the layers of a pulled image.
    #[test]
    fn gc_reads_every_manifest_pull_accepts_the_same_way() {
        use crate::manifest::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
        let d = |s: &str| Digest::of(s.as_bytes());
        let desc = |s: &str| serde_json::json!({"mediaType": "x", "digest": d(s), "size": 1});
        let fields = [
            serde_json::json!({"config": desc("c"), "layers": [desc("l1"), desc("l2")]}),
            serde_json::json!({"config": desc("c"), "layers": null}),
            serde_json::json!({"config": desc("c"), "manifests": []}),
            serde_json::json!({"config": desc("c"), "manifests": [desc("m")]}),
            serde_json::json!({"manifests": [desc("m1"), desc("m2")]}),
            serde_json::json!({"manifests": [desc("m")], "layers": [desc("l")]}),
            serde_json::json!({"manifests": null}),
        ];
        let types = [
            None,
            Some(OCI_MANIFEST),
            Some(DOCKER_MANIFEST),
            Some(OCI_INDEX),
            Some(DOCKER_LIST),
        ];
        let headers = [
            None,
            Some("application/json"),
            Some(OCI_MANIFEST),
            Some(DOCKER_MANIFEST),
            Some(OCI_INDEX),
            Some(DOCKER_LIST),
        ];
        let mut accepted = 0;
        for f in &fields {
            for t in types {
                let mut body = f.clone();
                body["schemaVersion"] = serde_json::json!(2);
                if let Some(t) = t {
                    body["mediaType"] = serde_json::json!(t);
                }
                let bytes = serde_json::to_vec(&body).unwrap();
                for h in headers {
                    let Ok(parsed) = Manifest::from_bytes(bytes.clone(), h).parse() else {
                        continue;
                    };
                    accepted += 1;
                    let gc = crate::store::manifest_refs(&bytes);
                    let digests = |v: Vec<crate::manifest::Descriptor>| -> Vec<Digest> {
                        v.into_iter().map(|d| d.digest).collect()
                    };
                    let (config, layers, children) = match parsed {
                        Parsed::Image { config, layers } => {
                            (Some(config.digest), digests(layers), vec![])
                        }
                        Parsed::Index { manifests } => (None, vec![], digests(manifests)),
                    };
                    let what = format!("{body} served as {h:?}");
                    assert_eq!(gc.config, config, "{what}");
                    assert_eq!(gc.layers, layers, "{what}");
                    assert_eq!(gc.children, children, "{what}");
                }
            }
        }
        assert!(
            accepted > 20,
            "only {accepted} cases accepted: the table tests nothing"
        );
    }
}

//! [`ImageBuilder`]: the image config a build fills step by step, and its serialisation.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SecondsFormat, Utc};
use oci_spec::image::{
    Arch, ConfigBuilder, HistoryBuilder, ImageConfigurationBuilder, Os, RootFsBuilder,
};
use serde_json::Value;

use super::manifest::{canonical, manifest_json};
use super::media::{BuildLayer, ImageFormat, Layer, Platform};
use super::stored::StoredImage;
use super::{ImageError, Result};
use crate::digest::Digest;
use crate::manifest::{ContainerConfig, ImageConfig};
use crate::reference::Reference;
use crate::store::Store;

pub use crate::manifest::Healthcheck;

/// The runtime part of an image config, as the Dockerfile instructions set it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunConfig {
    pub user: Option<String>,
    pub exposed_ports: BTreeSet<String>,
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub volumes: BTreeSet<String>,
    pub working_dir: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
    pub healthcheck: Option<Healthcheck>,
    pub on_build: Vec<String>,
    pub shell: Option<Vec<String>>,
}

impl From<ContainerConfig> for RunConfig {
    fn from(c: ContainerConfig) -> RunConfig {
        RunConfig {
            user: c.user.filter(|u| !u.is_empty()),
            exposed_ports: c.exposed_ports.unwrap_or_default().into_keys().collect(),
            env: c.env.unwrap_or_default(),
            entrypoint: c.entrypoint,
            cmd: c.cmd,
            volumes: c.volumes.unwrap_or_default().into_keys().collect(),
            working_dir: c.working_dir.filter(|w| !w.is_empty()),
            labels: c.labels.unwrap_or_default(),
            stop_signal: c.stop_signal.filter(|s| !s.is_empty()),
            healthcheck: c.healthcheck,
            on_build: c.on_build.unwrap_or_default(),
            shell: c.shell,
        }
    }
}

/// The serialised config and manifest of a finished image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageBlobs {
    pub format: ImageFormat,
    pub config: Vec<u8>,
    /// The image ID.
    pub config_digest: Digest,
    pub manifest: Vec<u8>,
    pub manifest_digest: Digest,
}

/// An image under construction: config state, layers and history.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    platform: Platform,
    created: DateTime<Utc>,
    config: RunConfig,
    /// The config's `author`: MAINTAINER's name, else the base image's (Docker keeps it).
    author: Option<String>,
    /// Set once CMD runs in this stage, so ENTRYPOINT no longer resets it (Docker's rule).
    cmd_set: bool,
    layers: Vec<BuildLayer>,
    history: Vec<oci_spec::image::History>,
    /// Where the entries this build adds start (the base image's own come first).
    fresh_history: usize,
}

impl ImageBuilder {
    /// An empty image (`FROM scratch`). `created` is used for the image and every new history
    /// entry: pass `SOURCE_DATE_EPOCH` when set, for reproducible digests.
    pub fn new(platform: Platform, created: DateTime<Utc>) -> ImageBuilder {
        ImageBuilder {
            platform,
            created,
            config: RunConfig::default(),
            author: None,
            cmd_set: false,
            layers: Vec::new(),
            history: Vec::new(),
            fresh_history: 0,
        }
    }

    /// Starts from an image in the store (`FROM image`): its config, layers and history.
    pub fn from_base(base: &StoredImage, created: DateTime<Utc>) -> Result<ImageBuilder> {
        let parsed = ImageConfig::read(&base.config).map_err(|source| ImageError::BadConfig {
            digest: base.config_digest,
            source,
        })?;
        let host = Platform::host();
        Ok(ImageBuilder {
            platform: Platform {
                os: parsed.os.unwrap_or(host.os),
                architecture: parsed.architecture.unwrap_or(host.architecture),
                variant: parsed.variant,
            },
            created,
            config: parsed.config.map(Into::into).unwrap_or_default(),
            author: parsed.author.filter(|a| !a.is_empty()),
            cmd_set: false,
            layers: base.layers.iter().copied().map(BuildLayer::from).collect(),
            fresh_history: parsed.history.len(),
            history: parsed.history,
        })
    }

    /// The config as it stands (what later steps see: ENV, WORKDIR, USER, SHELL, ONBUILD).
    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    pub fn layers(&self) -> &[BuildLayer] {
        &self.layers
    }

    /// The layers with their blobs; [`ImageError::NoBlob`] names the first that has none.
    pub fn blob_layers(&self) -> Result<Vec<Layer>> {
        self.layers
            .iter()
            .map(|l| l.blob().copied().ok_or(ImageError::NoBlob(l.diff_id())))
            .collect()
    }

    /// Gives every layer that has no blob yet the one `make` returns (see
    /// [`ensure_blob`](super::ensure_blob)); the first error stops it.
    pub fn ensure_blobs(
        &mut self,
        mut make: impl FnMut(&BuildLayer) -> Result<Layer>,
    ) -> Result<()> {
        for l in &mut self.layers {
            if l.blob().is_none() {
                *l = BuildLayer::Blob(make(l)?);
            }
        }
        Ok(())
    }

    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// `ENV key=value`: replaces an existing key in place, else appends.
    pub fn set_env(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        match self
            .config
            .env
            .iter_mut()
            .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
        {
            Some(e) => *e = entry,
            None => self.config.env.push(entry),
        }
    }

    /// The value of an environment variable in the config.
    pub fn env(&self, key: &str) -> Option<&str> {
        self.config
            .env
            .iter()
            .find_map(|e| e.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v))
    }

    pub fn set_user(&mut self, user: &str) {
        self.config.user = Some(user.to_string()).filter(|u| !u.is_empty());
    }

    /// `MAINTAINER name`: the image's `author`.
    pub fn set_author(&mut self, author: &str) {
        self.author = Some(author.to_string());
    }

    pub fn author(&self) -> Option<&str> {
        self.author.as_deref()
    }

    pub fn set_working_dir(&mut self, dir: &str) {
        self.config.working_dir = Some(dir.to_string());
    }

    pub fn set_label(&mut self, key: &str, value: &str) {
        self.config
            .labels
            .insert(key.to_string(), value.to_string());
    }

    /// `EXPOSE 80` / `EXPOSE 53/udp`: the protocol defaults to tcp, as Docker records it.
    pub fn expose(&mut self, port: &str) {
        let port = if port.contains('/') {
            port.to_ascii_lowercase()
        } else {
            format!("{port}/tcp")
        };
        self.config.exposed_ports.insert(port);
    }

    pub fn add_volume(&mut self, path: &str) {
        self.config.volumes.insert(path.to_string());
    }

    /// This image as the base of a `FROM <stage>`: what the stage set is now inherited (a later
    /// ENTRYPOINT resets the CMD, as after `FROM image`).
    pub fn as_base(&self) -> ImageBuilder {
        ImageBuilder {
            cmd_set: false,
            ..self.clone()
        }
    }

    pub fn set_cmd(&mut self, cmd: Vec<String>) {
        self.config.cmd = Some(cmd);
        self.cmd_set = true;
    }

    /// `ENTRYPOINT`: also clears a CMD inherited from the base image (not one set earlier in
    /// this stage), as Docker and BuildKit do.
    pub fn set_entrypoint(&mut self, entrypoint: Vec<String>) {
        self.config.entrypoint = Some(entrypoint);
        if !self.cmd_set {
            self.config.cmd = None;
        }
    }

    pub fn set_stop_signal(&mut self, signal: &str) {
        self.config.stop_signal = Some(signal.to_string());
    }

    pub fn set_healthcheck(&mut self, hc: Healthcheck) {
        self.config.healthcheck = Some(hc);
    }

    pub fn add_on_build(&mut self, trigger: &str) {
        self.config.on_build.push(trigger.to_string());
    }

    /// Clears the ONBUILD triggers (a child image must not inherit its parent's, once run).
    pub fn clear_on_build(&mut self) {
        self.config.on_build.clear();
    }

    pub fn set_shell(&mut self, shell: Vec<String>) {
        self.config.shell = Some(shell);
    }

    /// Sets the image's created time and that of every history entry this build added (the
    /// base image's entries keep theirs). A build served wholly from the cache uses it to
    /// reproduce the first build's config, and so its digest.
    pub fn restamp(&mut self, created: DateTime<Utc>) {
        self.created = created;
        let t = rfc3339(&created);
        for h in &mut self.history[self.fresh_history..] {
            h.set_created(Some(t.clone()));
        }
    }

    /// Appends a layer produced by a step, with its history entry.
    pub fn add_layer(&mut self, layer: impl Into<BuildLayer>, created_by: &str) {
        self.layers.push(layer.into());
        self.push_history(created_by, false);
    }

    /// Records a metadata-only step (ENV, CMD, …) in the history with `empty_layer`.
    pub fn add_empty_step(&mut self, created_by: &str) {
        self.push_history(created_by, true);
    }

    fn push_history(&mut self, created_by: &str, empty: bool) {
        let mut h = HistoryBuilder::default()
            .created(rfc3339(&self.created))
            .created_by(created_by.to_string());
        if empty {
            h = h.empty_layer(true);
        }
        self.history
            .push(h.build().expect("history has no required fields"));
    }

    /// Serialises config and manifest in `format`. Every layer must have its blob
    /// ([`ImageBuilder::ensure_blobs`]).
    pub fn finish(&self, format: ImageFormat) -> Result<ImageBlobs> {
        let layers = self.blob_layers()?;
        let config = canonical(&self.config_value());
        let config_digest = Digest::of(&config);
        let manifest = manifest_json(format, config.len() as u64, &config_digest, &layers)?;
        Ok(ImageBlobs {
            format,
            config_digest,
            manifest_digest: Digest::of(&manifest),
            config,
            manifest,
        })
    }

    /// Writes config and manifest to the store and gives the image each of `names`.
    /// Every layer blob must already be in the store.
    pub fn commit(
        &self,
        store: &Store,
        format: ImageFormat,
        names: &[Reference],
    ) -> Result<ImageBlobs> {
        let _lease = store.lease()?;
        for l in &self.blob_layers()? {
            if !store.has_blob(&l.digest) {
                return Err(crate::store::StoreError::BlobNotFound(l.digest).into());
            }
        }
        let blobs = self.finish(format)?;
        store.put_blob(&blobs.config)?;
        store.put_blob(&blobs.manifest)?;
        for name in names {
            store.tag(name, &blobs.manifest_digest)?;
        }
        Ok(blobs)
    }

    /// The OCI part of the runtime config.
    fn oci_run_config(&self) -> oci_spec::image::Config {
        let c = &self.config;
        let mut run = ConfigBuilder::default();
        if let Some(u) = &c.user {
            run = run.user(u.clone());
        }
        if !c.exposed_ports.is_empty() {
            run = run.exposed_ports(c.exposed_ports.iter().cloned().collect::<Vec<_>>());
        }
        if !c.env.is_empty() {
            run = run.env(c.env.clone());
        }
        if let Some(e) = &c.entrypoint {
            run = run.entrypoint(e.clone());
        }
        if let Some(cmd) = &c.cmd {
            run = run.cmd(cmd.clone());
        }
        if !c.volumes.is_empty() {
            run = run.volumes(c.volumes.iter().cloned().collect::<Vec<_>>());
        }
        if let Some(w) = &c.working_dir {
            run = run.working_dir(w.clone());
        }
        if !c.labels.is_empty() {
            run = run.labels(
                c.labels
                    .clone()
                    .into_iter()
                    .collect::<std::collections::HashMap<_, _>>(),
            );
        }
        if let Some(s) = &c.stop_signal {
            run = run.stop_signal(s.clone());
        }
        run.build().expect("config has no required fields")
    }

    fn config_value(&self) -> Value {
        let c = &self.config;
        let run = self.oci_run_config();
        let mut image = ImageConfigurationBuilder::default()
            .created(rfc3339(&self.created))
            .architecture(Arch::from(self.platform.architecture.as_str()))
            .os(Os::from(self.platform.os.as_str()))
            .config(run)
            .rootfs(
                RootFsBuilder::default()
                    .typ("layers")
                    .diff_ids(
                        self.layers
                            .iter()
                            .map(|l| l.diff_id().to_string())
                            .collect::<Vec<_>>(),
                    )
                    .build()
                    .expect("rootfs has no required fields"),
            )
            .history(self.history.clone());
        if let Some(v) = &self.platform.variant {
            image = image.variant(v.clone());
        }
        if let Some(a) = &self.author {
            image = image.author(a.clone());
        }
        let image = image
            .build()
            .expect("image config has every required field");
        let mut value = serde_json::to_value(&image).expect("config serialises");
        // Docker-only fields, serialised where and as Docker puts them.
        let run = value
            .get_mut("config")
            .and_then(Value::as_object_mut)
            .expect("config object present");
        if let Some(hc) = &c.healthcheck {
            run.insert(
                "Healthcheck".into(),
                serde_json::to_value(hc).expect("serialises"),
            );
        }
        if !c.on_build.is_empty() {
            run.insert("OnBuild".into(), c.on_build.clone().into());
        }
        if let Some(shell) = &c.shell {
            run.insert("Shell".into(), shell.clone().into());
        }
        value
    }
}

fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Compression;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn layer(seed: &[u8]) -> Layer {
        Layer {
            digest: Digest::of(seed),
            size: seed.len() as u64,
            diff_id: Digest::of(&[seed, b"-tar"].concat()),
            compression: Compression::Gzip,
        }
    }

    fn sample() -> ImageBuilder {
        let mut b = ImageBuilder::new(Platform::host(), t0());
        b.set_env("PATH", "/bin");
        b.set_env("A", "1");
        b.set_env("PATH", "/usr/bin:/bin");
        b.expose("80");
        b.expose("53/udp");
        b.add_volume("/data");
        b.set_label("b", "2");
        b.set_label("a", "1");
        b.set_working_dir("/app");
        b.set_user("1000:1000");
        b.set_cmd(vec!["serve".into()]);
        b.set_stop_signal("SIGTERM");
        b.set_shell(vec!["/bin/bash".into(), "-c".into()]);
        b.add_on_build("RUN echo child");
        b.set_healthcheck(Healthcheck {
            test: vec!["CMD-SHELL".into(), "true".into()],
            interval: 30_000_000_000,
            retries: 3,
            ..Default::default()
        });
        b.add_layer(layer(b"one"), "COPY . /app");
        b.add_empty_step("CMD [\"serve\"]");
        b
    }

    #[test]
    fn config_has_every_field_where_docker_and_oci_put_them() {
        let blobs = sample().finish(ImageFormat::Oci).unwrap();
        let v: Value = serde_json::from_slice(&blobs.config).unwrap();
        let c = &v["config"];
        assert_eq!(c["Env"], serde_json::json!(["PATH=/usr/bin:/bin", "A=1"]));
        assert_eq!(
            c["ExposedPorts"],
            serde_json::json!({"53/udp": {}, "80/tcp": {}})
        );
        assert_eq!(c["Volumes"], serde_json::json!({"/data": {}}));
        assert_eq!(c["Labels"], serde_json::json!({"a": "1", "b": "2"}));
        assert_eq!(c["WorkingDir"], "/app");
        assert_eq!(c["User"], "1000:1000");
        assert_eq!(c["Cmd"], serde_json::json!(["serve"]));
        assert_eq!(c["StopSignal"], "SIGTERM");
        assert_eq!(c["Shell"], serde_json::json!(["/bin/bash", "-c"]));
        assert_eq!(c["OnBuild"], serde_json::json!(["RUN echo child"]));
        assert_eq!(
            c["Healthcheck"],
            serde_json::json!({"Test": ["CMD-SHELL", "true"], "Interval": 30_000_000_000i64, "Retries": 3})
        );
        assert_eq!(v["created"], "2023-11-14T22:13:20Z");
        assert_eq!(v["os"], "linux");
        assert_eq!(v["rootfs"]["type"], "layers");
        assert_eq!(
            v["rootfs"]["diff_ids"][0],
            layer(b"one").diff_id.to_string()
        );
        assert_eq!(v["history"][0]["created_by"], "COPY . /app");
        assert!(v["history"][0].get("empty_layer").is_none());
        assert_eq!(v["history"][1]["empty_layer"], true);
        assert_eq!(blobs.config_digest, Digest::of(&blobs.config));
    }

    #[test]
    fn manifest_media_types_follow_the_format() {
        let oci = sample().finish(ImageFormat::Oci).unwrap();
        let m: Value = serde_json::from_slice(&oci.manifest).unwrap();
        assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
        assert_eq!(
            m["config"]["mediaType"],
            "application/vnd.oci.image.config.v1+json"
        );
        assert_eq!(
            m["layers"][0]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert_eq!(m["config"]["digest"], oci.config_digest.to_string());
        let docker = sample().finish(ImageFormat::Docker).unwrap();
        let m: Value = serde_json::from_slice(&docker.manifest).unwrap();
        assert_eq!(m["schemaVersion"], 2);
        assert_eq!(
            m["mediaType"],
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        assert_eq!(
            m["config"]["mediaType"],
            "application/vnd.docker.container.image.v1+json"
        );
        assert_eq!(
            m["layers"][0]["mediaType"],
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
        // Same config either way: the image ID does not depend on the manifest format.
        assert_eq!(docker.config_digest, oci.config_digest);
    }

    #[test]
    fn same_input_same_bytes() {
        for _ in 0..5 {
            assert_eq!(
                sample().finish(ImageFormat::Oci).unwrap(),
                sample().finish(ImageFormat::Oci).unwrap()
            );
        }
    }

    #[test]
    fn zstd_is_refused_in_docker_format() {
        let mut b = ImageBuilder::new(Platform::host(), t0());
        b.add_layer(
            Layer {
                compression: Compression::Zstd,
                ..layer(b"z")
            },
            "COPY",
        );
        assert!(matches!(
            b.finish(ImageFormat::Docker),
            Err(ImageError::ZstdInDockerFormat)
        ));
        assert!(b.finish(ImageFormat::Oci).is_ok());
    }

    #[test]
    fn an_image_is_finished_only_once_every_layer_has_its_blob() {
        let mut b = sample();
        let kept = layer(b"kept only unpacked");
        b.add_layer(
            BuildLayer::Unpacked {
                diff_id: kept.diff_id,
                size: 1,
            },
            "RUN make",
        );
        assert!(matches!(
            b.finish(ImageFormat::Oci),
            Err(ImageError::NoBlob(d)) if d == kept.diff_id
        ));
        let mut asked = Vec::new();
        b.ensure_blobs(|l| {
            asked.push(l.diff_id());
            Ok(kept)
        })
        .unwrap();
        assert_eq!(asked, [kept.diff_id], "only the layer without a blob");
        let m: Value =
            serde_json::from_slice(&b.finish(ImageFormat::Oci).unwrap().manifest).unwrap();
        let last = m["layers"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["digest"], kept.digest.to_string());
    }

    #[test]
    fn entrypoint_resets_only_an_inherited_cmd() {
        let mut b = ImageBuilder::new(Platform::host(), t0());
        b.set_cmd(vec!["a".into()]);
        b.set_entrypoint(vec!["e".into()]);
        assert_eq!(b.config().cmd, Some(vec!["a".to_string()]));
        let mut inherited = b.as_base();
        inherited.set_entrypoint(vec!["e2".into()]);
        assert_eq!(inherited.config().cmd, None);
    }
}

#[cfg(test)]
mod base_tests {
    use super::*;
    use crate::image::Compression;

    fn nginx_like() -> StoredImage {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/store/docker-config.json"
        );
        let config = std::fs::read(path).unwrap();
        let v: Value = serde_json::from_slice(&config).unwrap();
        let layers = v["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, d)| Layer {
                digest: Digest::of(&[i as u8]),
                size: 100 + i as u64,
                diff_id: d.as_str().unwrap().parse().unwrap(),
                compression: Compression::Gzip,
            })
            .collect();
        StoredImage {
            manifest_digest: Digest::of(b"m"),
            manifest: b"{}".to_vec(),
            format: ImageFormat::Docker,
            config_digest: Digest::of(&config),
            config,
            layers,
        }
    }

    #[test]
    fn from_base_keeps_the_base_config_layers_and_history() {
        let base = nginx_like();
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let mut b = ImageBuilder::from_base(&base, t).unwrap();
        assert_eq!(b.env("NGINX_VERSION"), Some("1.25.3"));
        assert_eq!(b.config().user, None);
        assert_eq!(b.config().working_dir, None);
        assert!(b.config().volumes.is_empty());
        assert_eq!(b.platform().architecture, "amd64");
        assert_eq!(b.config().healthcheck.as_ref().unwrap().retries, 3);
        // ENTRYPOINT drops the inherited CMD.
        b.set_entrypoint(vec!["/start".into()]);
        assert_eq!(b.config().cmd, None);
        b.add_layer(
            Layer {
                digest: Digest::of(b"new"),
                size: 3,
                diff_id: Digest::of(b"new-tar"),
                compression: Compression::Gzip,
            },
            "COPY site /usr/share/nginx/html",
        );
        let blobs = b.finish(ImageFormat::Oci).unwrap();
        let v: Value = serde_json::from_slice(&blobs.config).unwrap();
        assert_eq!(v["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);
        assert_eq!(v["history"].as_array().unwrap().len(), 4);
        assert_eq!(v["history"][1]["empty_layer"], true);
        assert_eq!(
            v["config"]["ExposedPorts"],
            serde_json::json!({"80/tcp": {}})
        );
        assert_eq!(v["config"]["StopSignal"], "SIGQUIT");
        assert_eq!(v["config"]["Healthcheck"]["Interval"], 30_000_000_000i64);
        assert!(v["config"].get("Cmd").is_none());
        let m: Value = serde_json::from_slice(&blobs.manifest).unwrap();
        assert_eq!(m["layers"].as_array().unwrap().len(), 3);
        assert_eq!(m["layers"][0]["size"], 100);
    }

    /// Docker keeps the base image's `author` unless MAINTAINER replaces it.
    #[test]
    fn author_comes_from_the_base_until_maintainer_sets_it() {
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let mut base = nginx_like();
        let mut v: Value = serde_json::from_slice(&base.config).unwrap();
        v["author"] = "base author".into();
        base.config = serde_json::to_vec(&v).unwrap();
        let mut b = ImageBuilder::from_base(&base, t).unwrap();
        let author = |b: &ImageBuilder| {
            let blobs = b.finish(ImageFormat::Oci).unwrap();
            let v: Value = serde_json::from_slice(&blobs.config).unwrap();
            v.get("author").cloned()
        };
        assert_eq!(author(&b), Some("base author".into()));
        b.set_author("kilroy");
        assert_eq!(b.author(), Some("kilroy"));
        assert_eq!(author(&b), Some("kilroy".into()));
        let scratch = ImageBuilder::new(Platform::host(), t);
        assert_eq!(author(&scratch), None);
    }
}

//! Builds real OCI image layouts (gzip'd tar layers, configs with correct
//! diff_ids) for the client interop tests, without any network.

use std::io::Write;
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;

use super::{OCI_INDEX, OCI_MANIFEST, noise, sha256};

/// A descriptor as written into manifests and index.json.
#[derive(Clone)]
pub struct Desc {
    pub media_type: String,
    pub digest: String,
    pub size: usize,
}

impl Desc {
    fn json(&self, extra: &str) -> String {
        format!(
            r#"{{"mediaType":"{}","digest":"{}","size":{}{extra}}}"#,
            self.media_type, self.digest, self.size
        )
    }
}

/// An OCI image layout directory being filled.
pub struct Layout<'a> {
    dir: &'a Path,
    refs: Vec<String>,
}

impl<'a> Layout<'a> {
    pub fn new(dir: &'a Path) -> Self {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout {
            dir,
            refs: Vec::new(),
        }
    }

    fn blob(&self, media_type: &str, bytes: &[u8]) -> Desc {
        let digest = sha256(bytes);
        let path = self
            .dir
            .join("blobs/sha256")
            .join(&digest["sha256:".len()..]);
        std::fs::write(path, bytes).unwrap();
        Desc {
            media_type: media_type.to_owned(),
            digest,
            size: bytes.len(),
        }
    }

    /// A gzip'd tar layer holding one file of `size` pseudo-random bytes.
    /// Returns the descriptor and the diff_id (digest of the uncompressed tar).
    fn layer(&self, name: &str, size: usize, seed: u64) -> (Desc, String) {
        let mut tar = tar::Builder::new(Vec::new());
        let content = noise(size, seed);
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        tar.append_data(&mut header, name, content.as_slice())
            .unwrap();
        let tar = tar.into_inner().unwrap();
        let diff_id = sha256(&tar);
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        (
            self.blob("application/vnd.oci.image.layer.v1.tar+gzip", &gz),
            diff_id,
        )
    }

    /// An image manifest with `layer_sizes.len()` layers; not yet referenced by
    /// index.json.
    pub fn image(&self, arch: &str, layer_sizes: &[usize], seed: u64) -> Desc {
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for (i, size) in layer_sizes.iter().enumerate() {
            let (desc, diff_id) =
                self.layer(&format!("file{i}-{arch}"), *size, seed * 100 + i as u64);
            layers.push(desc);
            diff_ids.push(format!("\"{diff_id}\""));
        }
        let config = format!(
            r#"{{"architecture":"{arch}","os":"linux","config":{{"Cmd":["/file0-{arch}"]}},"rootfs":{{"type":"layers","diff_ids":[{}]}},"history":[]}}"#,
            diff_ids.join(",")
        );
        let config = self.blob(
            "application/vnd.oci.image.config.v1+json",
            config.as_bytes(),
        );
        let layers: Vec<String> = layers.iter().map(|l| l.json("")).collect();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{},"layers":[{}]}}"#,
            config.json(""),
            layers.join(",")
        );
        self.blob(OCI_MANIFEST, manifest.as_bytes())
    }

    /// A multi-platform index over images for `arches`.
    pub fn index(&self, arches: &[&str], seed: u64) -> Desc {
        let entries: Vec<String> = arches
            .iter()
            .enumerate()
            .map(|(i, arch)| {
                let image = self.image(arch, &[3000, 5000], seed + i as u64);
                image.json(&format!(
                    r#","platform":{{"architecture":"{arch}","os":"linux"}}"#
                ))
            })
            .collect();
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#,
            entries.join(",")
        );
        self.blob(OCI_INDEX, index.as_bytes())
    }

    /// Names `desc` as `tag` in index.json.
    pub fn tag(&mut self, desc: &Desc, tag: &str) {
        self.refs.push(desc.json(&format!(
            r#","annotations":{{"org.opencontainers.image.ref.name":"{tag}"}}"#
        )));
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#,
            self.refs.join(",")
        );
        std::fs::write(self.dir.join("index.json"), index).unwrap();
    }
}

/// The manifest digest index.json gives for `tag`.
pub fn layout_digest(dir: &Path, tag: &str) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("{tag} not in {}", dir.display()))["digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

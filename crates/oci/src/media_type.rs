//! Media types of the documents a registry stores and serves.

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The config of an artifact that has none (`{}`, sha256:44136fa3…).
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// Layer types that are never uploaded to a registry: a layer of this kind
/// that carries `urls` is fetched from elsewhere, so its absence is no error.
pub const NON_DISTRIBUTABLE_LAYERS: &[&str] = &[
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
];

/// The media type without parameters or surrounding blanks, as compared by the
/// spec (`application/json; charset=utf-8` → `application/json`).
pub fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

#[cfg(test)]
mod tests {
    #[test]
    fn essence_strips_parameters() {
        assert_eq!(
            super::essence(" application/json ; charset=utf-8"),
            "application/json"
        );
        assert_eq!(super::essence(super::OCI_INDEX), super::OCI_INDEX);
    }
}

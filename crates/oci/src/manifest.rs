//! Manifest documents: parsing and the structural checks a registry applies on push.
//!
//! The registry stores the exact bytes it was given; this module only reads them
//! to learn what they reference (blobs, child manifests, a subject) and never
//! re-serialises them.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::digest::Digest;
use crate::media_type::{self, essence};

/// Whether a manifest describes one image/artifact or points at other manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    Image,
    Index,
}

/// A content descriptor as found in `config`, `layers`, `manifests` or `subject`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
    pub urls: Vec<String>,
}

/// What berth needs to know about a pushed manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The media type it is stored and served with.
    pub media_type: String,
    pub kind: ManifestKind,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("manifest schemaVersion must be 2, found {0}")]
    SchemaVersion(String),
    #[error(
        "manifest media type {0:?} is not supported: push an OCI image manifest or index, \
         or a Docker schema 2 manifest or manifest list"
    )]
    UnsupportedMediaType(String),
    #[error("Content-Type {header:?} does not match the manifest's mediaType {body:?}")]
    MediaTypeMismatch { header: String, body: String },
    #[error("manifest has no mediaType field and the request no manifest Content-Type")]
    NoMediaType,
    #[error("{0}")]
    Structure(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<serde_json::Value>,
    media_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
    subject: Option<RawDescriptor>,
    artifact_type: Option<String>,
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: Option<String>,
    digest: Option<String>,
    size: Option<i64>,
    artifact_type: Option<String>,
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    urls: Vec<String>,
}

impl RawDescriptor {
    fn validate(self, field: &str) -> Result<Descriptor, ManifestError> {
        let bad = |what: &str| ManifestError::Structure(format!("{field}: {what}"));
        let media_type = self
            .media_type
            .ok_or_else(|| bad("descriptor has no mediaType"))?;
        let digest = self.digest.ok_or_else(|| bad("descriptor has no digest"))?;
        let digest = Digest::parse(&digest).map_err(|e| bad(&e.to_string()))?;
        let size = self.size.ok_or_else(|| bad("descriptor has no size"))?;
        let size = u64::try_from(size).map_err(|_| bad("descriptor size is negative"))?;
        Ok(Descriptor {
            media_type,
            digest,
            size,
            artifact_type: self.artifact_type,
            annotations: self.annotations,
            urls: self.urls,
        })
    }
}

fn kind_of(media_type: &str) -> Option<ManifestKind> {
    match media_type {
        media_type::OCI_MANIFEST | media_type::DOCKER_MANIFEST => Some(ManifestKind::Image),
        media_type::OCI_INDEX | media_type::DOCKER_MANIFEST_LIST => Some(ManifestKind::Index),
        _ => None,
    }
}

impl Manifest {
    /// Parses `bytes` pushed with the request header `content_type`.
    ///
    /// The media type comes from the document's `mediaType` field, else from the
    /// header; when both are given they must agree, since clients reject a
    /// manifest served with a Content-Type other than its own `mediaType`.
    pub fn parse(content_type: Option<&str>, bytes: &[u8]) -> Result<Self, ManifestError> {
        let raw: RawManifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
        match &raw.schema_version {
            Some(serde_json::Value::Number(n)) if n.as_i64() == Some(2) => {}
            Some(other) => return Err(ManifestError::SchemaVersion(other.to_string())),
            None => return Err(ManifestError::SchemaVersion("nothing".into())),
        }
        let header = content_type.map(essence).filter(|h| kind_of(h).is_some());
        let media_type = match (&raw.media_type, header) {
            (Some(body), Some(header)) if body != header => {
                return Err(ManifestError::MediaTypeMismatch {
                    header: header.to_owned(),
                    body: body.clone(),
                });
            }
            (Some(body), _) => body.clone(),
            (None, Some(header)) => header.to_owned(),
            (None, None) => match content_type.map(essence) {
                Some(other) if !other.is_empty() && other != "application/json" => {
                    return Err(ManifestError::UnsupportedMediaType(other.to_owned()));
                }
                _ => return Err(ManifestError::NoMediaType),
            },
        };
        let kind = kind_of(&media_type)
            .ok_or_else(|| ManifestError::UnsupportedMediaType(media_type.clone()))?;

        let subject = raw.subject.map(|d| d.validate("subject")).transpose()?;
        let annotations = raw.annotations;
        let artifact_type = raw.artifact_type;
        match kind {
            ManifestKind::Image => {
                if raw.manifests.is_some() {
                    return Err(ManifestError::Structure(format!(
                        "an {media_type} has no \"manifests\" field"
                    )));
                }
                let config = raw
                    .config
                    .ok_or_else(|| ManifestError::Structure("image manifest has no config".into()))?
                    .validate("config")?;
                let layers = raw
                    .layers
                    .ok_or_else(|| {
                        ManifestError::Structure("image manifest has no layers array".into())
                    })?
                    .into_iter()
                    .enumerate()
                    .map(|(i, d)| d.validate(&format!("layers[{i}]")))
                    .collect::<Result<_, _>>()?;
                Ok(Manifest {
                    media_type,
                    kind,
                    config: Some(config),
                    layers,
                    manifests: Vec::new(),
                    subject,
                    artifact_type,
                    annotations,
                })
            }
            ManifestKind::Index => {
                if raw.config.is_some() || raw.layers.is_some() {
                    return Err(ManifestError::Structure(format!(
                        "an {media_type} has no \"config\" or \"layers\" fields"
                    )));
                }
                let manifests = raw
                    .manifests
                    .ok_or_else(|| {
                        ManifestError::Structure("image index has no manifests array".into())
                    })?
                    .into_iter()
                    .enumerate()
                    .map(|(i, d)| d.validate(&format!("manifests[{i}]")))
                    .collect::<Result<_, _>>()?;
                Ok(Manifest {
                    media_type,
                    kind,
                    config: None,
                    layers: Vec::new(),
                    manifests,
                    subject,
                    artifact_type,
                    annotations,
                })
            }
        }
    }

    /// Blobs that must already be in the repository for this manifest to be
    /// accepted: the config and every distributable layer.
    pub fn required_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config.iter().chain(self.layers.iter().filter(|layer| {
            !(layer.urls.iter().any(|u| !u.is_empty())
                && media_type::NON_DISTRIBUTABLE_LAYERS.contains(&layer.media_type.as_str()))
        }))
    }

    /// The artifact type shown for this manifest in a referrers list:
    /// `artifactType`, else (for an image manifest) the config's media type.
    pub fn referrer_artifact_type(&self) -> Option<&str> {
        self.artifact_type
            .as_deref()
            .or_else(|| self.config.as_ref().map(|c| c.media_type.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media_type::*;

    fn digest(s: &str) -> String {
        Digest::sha256_of(s.as_bytes()).to_string()
    }

    fn image(media_type: Option<&str>, extra: &str) -> String {
        let mt = media_type
            .map(|m| format!(r#""mediaType":"{m}","#))
            .unwrap_or_default();
        format!(
            r#"{{"schemaVersion":2,{mt}"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":3}}]{extra}}}"#,
            digest("c"),
            digest("l")
        )
    }

    #[test]
    fn oci_image_manifest() {
        let m =
            Manifest::parse(Some(OCI_MANIFEST), image(Some(OCI_MANIFEST), "").as_bytes()).unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(m.required_blobs().count(), 2);
        assert_eq!(
            m.referrer_artifact_type(),
            Some("application/vnd.oci.image.config.v1+json")
        );
    }

    #[test]
    fn media_type_from_header_when_body_has_none() {
        let m = Manifest::parse(
            Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
            image(None, "").as_bytes(),
        )
        .unwrap();
        assert_eq!(m.media_type, OCI_MANIFEST);
        assert_eq!(
            Manifest::parse(None, image(None, "").as_bytes()),
            Err(ManifestError::NoMediaType)
        );
    }

    #[test]
    fn header_and_body_must_agree() {
        let err = Manifest::parse(
            Some(DOCKER_MANIFEST),
            image(Some(OCI_MANIFEST), "").as_bytes(),
        );
        assert!(matches!(err, Err(ManifestError::MediaTypeMismatch { .. })));
        // A generic header does not override the document's own type.
        let m = Manifest::parse(
            Some("application/json"),
            image(Some(DOCKER_MANIFEST), "").as_bytes(),
        )
        .unwrap();
        assert_eq!(m.media_type, DOCKER_MANIFEST);
    }

    #[test]
    fn artifact_with_subject() {
        let extra = format!(
            r#","artifactType":"application/vnd.example.sbom","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":7}},"annotations":{{"a":"b"}}"#,
            digest("s")
        );
        let m = Manifest::parse(None, image(Some(OCI_MANIFEST), &extra).as_bytes()).unwrap();
        assert_eq!(m.subject.as_ref().unwrap().digest.to_string(), digest("s"));
        assert_eq!(
            m.referrer_artifact_type(),
            Some("application/vnd.example.sbom")
        );
        assert_eq!(m.annotations.unwrap()["a"], "b");
    }

    #[test]
    fn index_and_docker_list() {
        for mt in [OCI_INDEX, DOCKER_MANIFEST_LIST] {
            let body = format!(
                r#"{{"schemaVersion":2,"mediaType":"{mt}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":9,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
                digest("m")
            );
            let m = Manifest::parse(Some(mt), body.as_bytes()).unwrap();
            assert_eq!(m.kind, ManifestKind::Index);
            assert_eq!(m.manifests.len(), 1);
            assert_eq!(m.required_blobs().count(), 0);
        }
    }

    #[test]
    fn foreign_layers_are_not_required() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{}","size":3,"urls":["https://example.com/l"]}}]}}"#,
            digest("c"),
            digest("l")
        );
        let m = Manifest::parse(None, body.as_bytes()).unwrap();
        assert_eq!(m.required_blobs().count(), 1);
    }

    #[test]
    fn rejects_malformed() {
        type Expectation = fn(&ManifestError) -> bool;
        let cases: Vec<(String, Expectation)> = vec![
            ("not json".into(), |e| matches!(e, ManifestError::Json(_))),
            (r#"{"schemaVersion":1}"#.into(), |e| {
                matches!(e, ManifestError::SchemaVersion(_))
            }),
            (
                r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws"}"#
                    .to_owned(),
                |e| matches!(e, ManifestError::UnsupportedMediaType(_)),
            ),
            (
                format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","layers":[]}}"#),
                |e| matches!(e, ManifestError::Structure(_)),
            ),
            (
                format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}"}}"#),
                |e| matches!(e, ManifestError::Structure(_)),
            ),
            (
                image(Some(OCI_MANIFEST), "").replace(r#""size":3"#, r#""size":-1"#),
                |e| matches!(e, ManifestError::Structure(_)),
            ),
            (
                image(Some(OCI_MANIFEST), "").replace("sha256:", "sha256:zz"),
                |e| matches!(e, ManifestError::Structure(_)),
            ),
        ];
        for (body, expected) in cases {
            let err = Manifest::parse(None, body.as_bytes()).unwrap_err();
            assert!(expected(&err), "{body}: {err:?}");
        }
    }
}

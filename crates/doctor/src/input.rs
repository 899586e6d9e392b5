//! Reading what the user has: files, directories and stdin holding YAML or
//! JSON, one or many documents, `kind: List` included. Everything becomes a
//! flat list of Kubernetes objects as JSON values; what a document means is
//! decided later, so anything unknown is simply skipped.

use std::path::{Path, PathBuf};

use serde::Deserialize as _;
use serde_json::Value;

use crate::DoctorError;

/// One Kubernetes object and where it was read from.
#[derive(Debug, Clone)]
pub struct Document {
    pub origin: String,
    pub value: Value,
}

/// Every object in `paths` (`-` is stdin, read through `stdin`).
pub fn read_paths(
    paths: &[PathBuf],
    stdin: &mut dyn std::io::Read,
) -> Result<Vec<Document>, DoctorError> {
    let mut out = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            stdin
                .read_to_string(&mut text)
                .map_err(|source| DoctorError::Read {
                    path: "-".into(),
                    source,
                })?;
            out.extend(parse_text(&text, "<stdin>")?);
        } else {
            read_path(path, &mut out)?;
        }
    }
    Ok(out)
}

fn read_path(path: &Path, out: &mut Vec<Document>) -> Result<(), DoctorError> {
    let meta = std::fs::metadata(path).map_err(|source| DoctorError::Read {
        path: path.to_owned(),
        source,
    })?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|source| DoctorError::Read {
                path: path.to_owned(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        // Sorted so that output order does not depend on the file system.
        entries.sort();
        for entry in entries {
            let is_dir = entry.is_dir();
            let manifest = matches!(
                entry.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            );
            if is_dir || manifest {
                read_path(&entry, out)?;
            }
        }
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(|source| DoctorError::Read {
        path: path.to_owned(),
        source,
    })?;
    out.extend(parse_text(&text, &path.display().to_string())?);
    Ok(())
}

/// Parses YAML or JSON text with any number of documents; `List`s are
/// flattened into their items. A syntax error makes the input unusable.
pub fn parse_text(text: &str, origin: &str) -> Result<Vec<Document>, DoctorError> {
    let trimmed = text.trim_start();
    let mut values = Vec::new();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        // JSON (kubectl -o json): possibly several concatenated objects.
        for v in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
            values.push(v.map_err(|e| DoctorError::Syntax {
                origin: origin.to_owned(),
                message: e.to_string(),
            })?);
        }
    } else {
        for doc in serde_norway::Deserializer::from_str(text) {
            let v = Value::deserialize(doc).map_err(|e| DoctorError::Syntax {
                origin: origin.to_owned(),
                message: e.to_string(),
            })?;
            values.push(v);
        }
    }
    let mut out = Vec::new();
    for v in values {
        flatten(v, origin, &mut out);
    }
    Ok(out)
}

fn flatten(v: Value, origin: &str, out: &mut Vec<Document>) {
    match v {
        Value::Array(items) => items.into_iter().for_each(|i| flatten(i, origin, out)),
        Value::Object(ref map) => {
            let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default();
            if kind == "List" || kind.ends_with("List") && map.get("items").is_some() {
                if let Some(Value::Array(items)) = map.get("items") {
                    for i in items.clone() {
                        flatten(i, origin, out);
                    }
                }
            } else {
                out.push(Document {
                    origin: origin.to_owned(),
                    value: v,
                });
            }
        }
        // Empty documents (`---` at the end) and scalars are not objects.
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_multi_document_and_lists() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\n---\n\
                    kind: List\nitems:\n- kind: Secret\n  metadata: {name: s}\n- kind: PodList\n  items: [{kind: Pod, metadata: {name: b}}]\n";
        let docs = parse_text(text, "t").unwrap();
        let names: Vec<_> = docs
            .iter()
            .map(|d| d.value["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["a", "s", "b"]);
    }

    #[test]
    fn json_concatenated_and_arrays() {
        let docs = parse_text(
            r#"{"kind":"Pod","metadata":{"name":"a"}} [{"kind":"Pod","metadata":{"name":"b"}}]"#,
            "t",
        )
        .unwrap();
        assert_eq!(docs.len(), 2);
    }

    #[test]
    fn syntax_errors_are_reported_with_origin() {
        let e = parse_text("kind: Pod\n  bad: [", "f.yaml").unwrap_err();
        assert!(e.to_string().contains("f.yaml"), "{e}");
        assert!(parse_text("{\"kind\":", "j").is_err());
    }
}

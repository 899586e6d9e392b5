//! Settings of `berth serve`: flags over `BERTH_*` variables over the config
//! file over built-in defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_registry::RegistryConfig;
use clap::{Args, ValueEnum};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines
    Text,
    /// One JSON object per line, for log pipelines
    Json,
}

#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// TOML configuration file (see berth.example.toml); flags and BERTH_*
    /// variables override what it sets
    #[arg(long, env = "BERTH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on [default: 127.0.0.1:5000]
    #[arg(long, env = "BERTH_ADDR", value_name = "IP:PORT")]
    pub addr: Option<SocketAddr>,

    /// Directory holding blobs, uploads and the metadata database [default: ./berth-data]
    #[arg(long, env = "BERTH_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Log line format [default: text]
    #[arg(long, env = "BERTH_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Allow deleting manifests, tags and blobs; when false they answer 405 UNSUPPORTED [default: true]
    #[arg(long, env = "BERTH_DELETE_ENABLED", value_name = "BOOL")]
    pub delete_enabled: Option<bool>,

    /// Largest manifest accepted, in bytes; larger pushes get 413 [default: 4194304]
    #[arg(long, env = "BERTH_MAX_MANIFEST_BYTES", value_name = "BYTES")]
    pub max_manifest_bytes: Option<usize>,

    /// Discard uploads not written to for this long, e.g. 30m or 24h [default: 24h]
    #[arg(long, env = "BERTH_UPLOAD_TTL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub upload_ttl: Option<Duration>,
}

/// The config file's keys; each is optional, unknown keys are an error so a
/// typo is not silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    addr: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    log_format: Option<LogFormat>,
    delete_enabled: Option<bool>,
    max_manifest_bytes: Option<usize>,
    upload_ttl: Option<String>,
}

/// Everything `berth serve` needs, resolved.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    pub registry: RegistryConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Invalid {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

impl ServeArgs {
    pub fn resolve(self) -> Result<ServeConfig, ConfigError> {
        let file = match &self.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let file_ttl = match &file.upload_ttl {
            Some(text) => {
                Some(
                    humantime::parse_duration(text).map_err(|e| ConfigError::Invalid {
                        path: self.config.clone().unwrap_or_default(),
                        message: format!(
                            "upload_ttl = {text:?}: {e} (write e.g. \"30m\" or \"24h\")"
                        ),
                    })?,
                )
            }
            None => None,
        };
        let defaults = RegistryConfig::default();
        Ok(ServeConfig {
            addr: self
                .addr
                .or(file.addr)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5000))),
            data_dir: self
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("berth-data")),
            log_format: self
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Text),
            registry: RegistryConfig {
                delete_enabled: self
                    .delete_enabled
                    .or(file.delete_enabled)
                    .unwrap_or(defaults.delete_enabled),
                max_manifest_bytes: self
                    .max_manifest_bytes
                    .or(file.max_manifest_bytes)
                    .unwrap_or(defaults.max_manifest_bytes),
                upload_ttl: self.upload_ttl.or(file_ttl).unwrap_or(defaults.upload_ttl),
                ..defaults
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn defaults() {
        let c = ServeArgs::default().resolve().unwrap();
        assert_eq!(c.addr.to_string(), "127.0.0.1:5000");
        assert_eq!(c.data_dir, PathBuf::from("berth-data"));
        assert!(c.registry.delete_enabled);
        assert_eq!(c.registry.max_manifest_bytes, 4 << 20);
    }

    #[test]
    fn flags_override_file() {
        let file = write(
            "addr = \"0.0.0.0:6000\"\ndata_dir = \"/srv/berth\"\ndelete_enabled = false\nupload_ttl = \"30m\"\n",
        );
        let args = ServeArgs {
            config: Some(file.path().to_owned()),
            addr: Some("127.0.0.1:7000".parse().unwrap()),
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.addr.to_string(), "127.0.0.1:7000");
        assert_eq!(c.data_dir, PathBuf::from("/srv/berth"));
        assert!(!c.registry.delete_enabled);
        assert_eq!(c.registry.upload_ttl, Duration::from_secs(1800));
    }

    #[test]
    fn file_errors_name_the_problem() {
        let file = write("adress = \"x\"\n");
        let args = ServeArgs {
            config: Some(file.path().to_owned()),
            ..Default::default()
        };
        let err = args.resolve().unwrap_err().to_string();
        assert!(err.contains("adress"), "{err}");
        let file = write("upload_ttl = \"soon\"\n");
        let args = ServeArgs {
            config: Some(file.path().to_owned()),
            ..Default::default()
        };
        let err = args.resolve().unwrap_err().to_string();
        assert!(err.contains("upload_ttl"), "{err}");
    }

    #[test]
    fn example_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../berth.example.toml");
        let args = ServeArgs {
            config: Some(path),
            ..Default::default()
        };
        args.resolve().unwrap();
    }
}

//! The configuration file a DBA puts in place once, so that
//! `archive_command = 'pitr wal-push %p'` and the generated
//! `restore_command` carry no secret and no long URL.
//!
//! `/etc/pitr/pitr.toml`, or the file `PITR_CONFIG` names:
//!
//! ```toml
//! # The repository when neither --repo nor PITR_REPO is given.
//! repository = "s3://backups/db1"
//!
//! [store]
//! endpoint = "http://127.0.0.1:9000"   # an S3-compatible store; plain http allowed below
//! region = "eu-west-1"
//! allow_http = true
//! # Where the credentials come from: the environment and the client's own
//! # chain (instance metadata, web identity, container credentials) always;
//! # and this file of `NAME=value` lines (the standard variable names, such
//! # as AWS_ACCESS_KEY_ID), readable by the PostgreSQL OS user only.
//! credentials_file = "/etc/pitr/s3.credentials"
//!
//! [store.options]   # any other setting of the client, by its variable name
//! aws_virtual_hosted_style_request = "false"
//! ```
//!
//! The environment overrides the file: a variable set (`AWS_REGION`,
//! `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, ...) wins over the same setting
//! here. No value of the file is ever printed.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::repo::store::object::Service;
use crate::repo::store::posix::Posix;
use crate::repo::store::StoreRead;

/// Where the configuration is when `PITR_CONFIG` does not say.
pub const DEFAULT_PATH: &str = "/etc/pitr/pitr.toml";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The repository URL (or directory) used when none is given.
    pub repository: Option<String>,
    /// How many later ready segments `wal-push` pushes along with the one
    /// asked for (`--push-ahead`).
    pub push_ahead: Option<u16>,
    #[serde(default)]
    pub store: StoreConfig,
}

/// The most segments `wal-push` pushes ahead: each is a thread and a file
/// open at once, and 64 × 16 MiB is already a gigabyte in flight.
pub const MAX_PUSH_AHEAD: u16 = 64;

/// What `wal-push` pushes ahead when nothing says: enough in flight to
/// hide a store's latency, few enough for a small host.
pub const DEFAULT_PUSH_AHEAD: u16 = 8;

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub allow_http: Option<bool>,
    pub credentials_file: Option<PathBuf>,
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Options may hold secrets: their names only.
        f.debug_struct("StoreConfig")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("allow_http", &self.allow_http)
            .field("credentials_file", &self.credentials_file)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Reads a small local file through the posix driver (the one place the
/// library touches the file system): `None` when it does not exist.
fn read_local(path: &Path) -> Result<Option<String>> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        bail!("`{}` is not a file name", path.display());
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let store = Posix::new(dir);
    let name = name.to_string_lossy();
    if !store.exists() || store.stat(&name)?.is_none() {
        return Ok(None);
    }
    let bytes = crate::repo::store::read_all(&store, &name)
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    String::from_utf8(bytes)
        .map(Some)
        .with_context(|| format!("`{}` is not UTF-8 text", path.display()))
}

impl Config {
    /// The configuration in force: `PITR_CONFIG` (which must exist), else
    /// /etc/pitr/pitr.toml if present, else none.
    pub fn load() -> Result<Config> {
        let (path, required) = match std::env::var_os("PITR_CONFIG") {
            Some(path) if !path.is_empty() => (PathBuf::from(path), true),
            _ => (PathBuf::from(DEFAULT_PATH), false),
        };
        match read_local(&path)? {
            Some(text) => Config::parse(&text)
                .with_context(|| format!("cannot use the configuration file `{}`", path.display())),
            None if required => bail!(
                "the configuration file `{}` (PITR_CONFIG) does not exist",
                path.display()
            ),
            None => Ok(Config::default()),
        }
    }

    pub fn parse(text: &str) -> Result<Config> {
        // toml's messages quote the offending line, which may hold a
        // secret: say where, not what.
        toml::from_str(text).map_err(|error| {
            let place = error
                .span()
                .map(|span| {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!(" at line {line}")
                })
                .unwrap_or_default();
            anyhow::anyhow!(
                "it is not valid{place}: {}",
                error.message().lines().next().unwrap_or("")
            )
        })
    }

    /// The client settings for `service` (lower-case variable names, in
    /// the order the driver applies them): this file's, then the
    /// credentials file's, then the environment's, so the environment wins.
    pub fn store_settings(&self, service: Service) -> Result<Vec<(String, String)>> {
        let store = &self.store;
        let (endpoint, region, allow_http) = match service {
            Service::S3 => ("aws_endpoint", Some("aws_region"), "aws_allow_http"),
            Service::Azure => ("azure_storage_endpoint", None, "azure_allow_http"),
            Service::Gcs => ("google_base_url", None, "google_allow_http"),
        };
        let mut settings = Vec::new();
        if let Some(value) = &store.endpoint {
            settings.push((endpoint.to_string(), value.clone()));
        }
        match (region, &store.region) {
            (Some(name), Some(value)) => settings.push((name.to_string(), value.clone())),
            (None, Some(_)) => bail!("`region` in [store] is for S3; this repository is not on S3"),
            _ => {}
        }
        if let Some(value) = store.allow_http {
            settings.push((allow_http.to_string(), value.to_string()));
        }
        for (name, value) in &store.options {
            settings.push((name.to_ascii_lowercase(), value.clone()));
        }
        if let Some(path) = &store.credentials_file {
            let text = read_local(path)?.with_context(|| {
                format!("the credentials file `{}` does not exist", path.display())
            })?;
            settings.extend(parse_credentials(&text).with_context(|| {
                format!("cannot use the credentials file `{}`", path.display())
            })?);
        }
        settings.extend(crate::repo::store::object::settings_from_env());
        Ok(settings)
    }
}

/// `NAME=value` lines (blank lines and `#` comments allowed, `export `
/// tolerated), as lower-case names.
fn parse_credentials(text: &str) -> Result<Vec<(String, String)>> {
    let mut settings = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((name, value)) = line.split_once('=') else {
            // The line may be a secret: only its number is named.
            bail!("line {} is not NAME=value", number + 1);
        };
        let value = value.trim().trim_matches('"').trim_matches('\'');
        settings.push((name.trim().to_ascii_lowercase(), value.to_string()));
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_gives_settings_the_environment_overrides() {
        let config = Config::parse(
            "repository = \"s3://b/p\"\n[store]\nendpoint = \"http://127.0.0.1:9000\"\nregion = \"eu-west-1\"\nallow_http = true\n[store.options]\nAWS_VIRTUAL_HOSTED_STYLE_REQUEST = \"false\"\n",
        )
        .unwrap();
        assert_eq!(config.repository.as_deref(), Some("s3://b/p"));
        let settings = config.store_settings(Service::S3).unwrap();
        let first = |name: &str| {
            settings
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(first("aws_endpoint"), Some("http://127.0.0.1:9000"));
        assert_eq!(first("aws_region"), Some("eu-west-1"));
        assert_eq!(first("aws_allow_http"), Some("true"));
        assert_eq!(first("aws_virtual_hosted_style_request"), Some("false"));
    }

    #[test]
    fn push_ahead_is_read() {
        let config = Config::parse("push_ahead = 0\n").unwrap();
        assert_eq!(config.push_ahead, Some(0));
        assert_eq!(Config::parse("").unwrap().push_ahead, None);
        assert!(Config::parse("push_ahead = -1\n").is_err());
    }

    #[test]
    fn mistakes_are_named_without_quoting_values() {
        let error = Config::parse("[store]\nregoin = \"x\"\n").unwrap_err();
        assert!(format!("{error:#}").contains("line 2"), "{error:#}");
        let error = Config::parse("[store]\nendpoint = \"sekrit-value\n").unwrap_err();
        assert!(!format!("{error:#}").contains("sekrit"), "{error:#}");
        let error = parse_credentials("AWS_ACCESS_KEY_ID=a\nsekrit-without-name\n").unwrap_err();
        assert!(!format!("{error:#}").contains("sekrit"), "{error:#}");
        assert!(format!("{error:#}").contains("line 2"), "{error:#}");
        assert_eq!(
            parse_credentials("# c\nexport AWS_SECRET_ACCESS_KEY=\"s\"\n").unwrap(),
            [("aws_secret_access_key".to_string(), "s".to_string())]
        );
    }

    #[test]
    fn debug_shows_no_option_values() {
        let config =
            Config::parse("[store.options]\naws_secret_access_key = \"sekrit\"\n").unwrap();
        assert!(!format!("{config:?}").contains("sekrit"));
    }
}

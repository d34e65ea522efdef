//! AWS credentials for Bedrock: SigV4 key pairs from the environment or a shared
//! credentials file, or a Bedrock API key (bearer token).
//!
//! Resolution never reads the process environment directly: callers pass a lookup
//! function, so tests (and the config layer) decide what the "environment" is. The
//! secret parts are held in [`Secret`]s and never printed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::Secret;

/// A SigV4 key pair, optionally temporary (with a session token).
#[derive(Clone, Debug)]
pub struct AwsCredentials {
    /// The access key id (`AKIA…`/`ASIA…`); not secret on its own, but kept out of logs anyway.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: Secret,
    /// The session token of temporary credentials, sent as `X-Amz-Security-Token`.
    pub session_token: Option<Secret>,
}

/// How requests to Bedrock are authenticated.
#[derive(Clone, Debug)]
pub enum BedrockAuth {
    /// SigV4 signing with a key pair (signing name `bedrock`).
    SigV4(AwsCredentials),
    /// A Bedrock API key sent as `Authorization: Bearer …`, no signing.
    ApiKey(Secret),
}

/// Why credentials or a region could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// Neither the environment nor the profile file held credentials.
    #[error("no AWS credentials found (environment or profile {profile:?})")]
    NotFound {
        /// The profile that was looked up.
        profile: String,
    },
    /// The profile exists but lacks a required key.
    #[error("AWS profile {profile:?} has no {key}")]
    Incomplete {
        /// The profile that was looked up.
        profile: String,
        /// The missing key.
        key: &'static str,
    },
    /// The credentials file could not be read.
    #[error("cannot read AWS credentials file {path}")]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// No region was configured.
    #[error("no AWS region configured (AWS_REGION, AWS_DEFAULT_REGION or the profile's region)")]
    NoRegion,
}

impl AwsCredentials {
    /// Builds credentials from their parts.
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key: Secret::new(secret_access_key.into()),
            session_token: session_token.map(Secret::new),
        }
    }

    /// Reads `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`
    /// through `env`. Returns `None` unless both key parts are present and non-empty.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Option<Self> {
        let get = |k: &str| env(k).filter(|v| !v.is_empty());
        let id = get("AWS_ACCESS_KEY_ID")?;
        let secret = get("AWS_SECRET_ACCESS_KEY")?;
        Some(Self::new(id, secret, get("AWS_SESSION_TOKEN")))
    }

    /// Reads a profile from the text of a shared credentials file (INI format).
    ///
    /// # Errors
    /// [`CredentialsError::NotFound`] if the profile is absent,
    /// [`CredentialsError::Incomplete`] if it lacks a key.
    pub fn from_profile_text(text: &str, profile: &str) -> Result<Self, CredentialsError> {
        let sections = parse_ini(text);
        let section =
            sections.get(profile).ok_or_else(|| CredentialsError::NotFound { profile: profile.to_owned() })?;
        let need = |key: &'static str| {
            section
                .get(key)
                .filter(|v| !v.is_empty())
                .cloned()
                .ok_or_else(|| CredentialsError::Incomplete { profile: profile.to_owned(), key })
        };
        Ok(Self::new(
            need("aws_access_key_id")?,
            need("aws_secret_access_key")?,
            section.get("aws_session_token").cloned(),
        ))
    }

    /// Resolves credentials the way the AWS CLI does for static keys: the environment
    /// first, then the profile `AWS_PROFILE` (default `default`) of the file
    /// `AWS_SHARED_CREDENTIALS_FILE` (default `$HOME/.aws/credentials`).
    ///
    /// # Errors
    /// [`CredentialsError`] when nothing usable is found or the file is unreadable.
    pub fn resolve(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, CredentialsError> {
        if let Some(c) = Self::from_env(env) {
            return Ok(c);
        }
        let profile = profile_name(env);
        let Some(path) = shared_file(env, "AWS_SHARED_CREDENTIALS_FILE", "credentials") else {
            return Err(CredentialsError::NotFound { profile });
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_profile_text(&text, &profile),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(CredentialsError::NotFound { profile }),
            Err(source) => Err(CredentialsError::Io { path, source }),
        }
    }
}

impl BedrockAuth {
    /// `AWS_BEARER_TOKEN_BEDROCK` if set, else SigV4 credentials from [`AwsCredentials::resolve`].
    ///
    /// # Errors
    /// As [`AwsCredentials::resolve`].
    pub fn resolve(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, CredentialsError> {
        if let Some(key) = env("AWS_BEARER_TOKEN_BEDROCK").filter(|v| !v.is_empty()) {
            return Ok(Self::ApiKey(Secret::new(key)));
        }
        AwsCredentials::resolve(env).map(Self::SigV4)
    }
}

/// The region: `AWS_REGION`, `AWS_DEFAULT_REGION`, then `region` of the profile in
/// the config file (`AWS_CONFIG_FILE`, default `$HOME/.aws/config`).
///
/// # Errors
/// [`CredentialsError::NoRegion`] when none is set.
pub fn resolve_region(env: &dyn Fn(&str) -> Option<String>) -> Result<String, CredentialsError> {
    for key in ["AWS_REGION", "AWS_DEFAULT_REGION"] {
        if let Some(r) = env(key).filter(|v| !v.is_empty()) {
            return Ok(r);
        }
    }
    let profile = profile_name(env);
    let text =
        shared_file(env, "AWS_CONFIG_FILE", "config").and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default();
    region_from_config_text(&text, &profile).ok_or(CredentialsError::NoRegion)
}

/// `region` of `profile` in the text of an AWS config file (`[default]` or `[profile NAME]`).
pub fn region_from_config_text(text: &str, profile: &str) -> Option<String> {
    let sections = parse_ini(text);
    let named = format!("profile {profile}");
    sections
        .get(&named)
        .or_else(|| sections.get(profile))
        .and_then(|s| s.get("region"))
        .filter(|r| !r.is_empty())
        .cloned()
}

fn profile_name(env: &dyn Fn(&str) -> Option<String>) -> String {
    env("AWS_PROFILE").filter(|v| !v.is_empty()).unwrap_or_else(|| "default".to_owned())
}

fn shared_file(env: &dyn Fn(&str) -> Option<String>, var: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = env(var).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    env("HOME").filter(|v| !v.is_empty()).map(|home| Path::new(&home).join(".aws").join(name))
}

/// A forgiving INI reader: `[section]`, `key = value`, `#`/`;` comments; keys are
/// lower-cased, later duplicates win.
fn parse_ini(text: &str) -> HashMap<String, HashMap<String, String>> {
    let mut out: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut current: Option<String> = None;
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            out.entry(name.clone()).or_default();
            current = Some(name);
        } else if let (Some(section), Some((k, v))) = (&current, line.split_once('=')) {
            out.entry(section.clone()).or_default().insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn env_credentials_with_session_token() {
        let env = env_of(&[
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
            ("AWS_SESSION_TOKEN", "tok"),
        ]);
        let c = AwsCredentials::resolve(&env).expect("env creds");
        assert_eq!(c.access_key_id, "AKIDEXAMPLE");
        assert_eq!(c.secret_access_key.expose(), "s3cr3t");
        assert_eq!(c.session_token.as_ref().map(Secret::expose), Some("tok"));
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn profile_file_is_read_with_aws_profile() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("credentials");
        std::fs::write(
            &path,
            "[default]\naws_access_key_id = AKDEF\naws_secret_access_key = defsecret\n\n\
             # comment\n[work]\naws_access_key_id=AKWORK\naws_secret_access_key = worksecret\n\
             aws_session_token = worktoken\n",
        )
        .expect("write");
        let p = path.to_string_lossy().into_owned();
        let env = env_of(&[("AWS_SHARED_CREDENTIALS_FILE", &p), ("AWS_PROFILE", "work")]);
        let c = AwsCredentials::resolve(&env).expect("profile creds");
        assert_eq!(c.access_key_id, "AKWORK");
        assert_eq!(c.secret_access_key.expose(), "worksecret");
        assert_eq!(c.session_token.as_ref().map(Secret::expose), Some("worktoken"));

        let env = env_of(&[("AWS_SHARED_CREDENTIALS_FILE", &p)]);
        assert_eq!(AwsCredentials::resolve(&env).expect("default").access_key_id, "AKDEF");

        let env = env_of(&[("AWS_SHARED_CREDENTIALS_FILE", &p), ("AWS_PROFILE", "nope")]);
        assert!(matches!(AwsCredentials::resolve(&env), Err(CredentialsError::NotFound { .. })));
    }

    #[test]
    fn incomplete_profile_names_the_missing_key() {
        let err =
            AwsCredentials::from_profile_text("[default]\naws_access_key_id=A\n", "default").expect_err("incomplete");
        assert!(matches!(err, CredentialsError::Incomplete { key: "aws_secret_access_key", .. }));
    }

    #[test]
    fn bearer_token_wins_and_region_resolution() {
        let env = env_of(&[("AWS_BEARER_TOKEN_BEDROCK", "bk"), ("AWS_DEFAULT_REGION", "eu-west-1")]);
        assert!(matches!(BedrockAuth::resolve(&env), Ok(BedrockAuth::ApiKey(_))));
        assert_eq!(resolve_region(&env).expect("region"), "eu-west-1");
        assert_eq!(
            region_from_config_text("[profile work]\nregion = ap-south-1\n", "work").as_deref(),
            Some("ap-south-1")
        );
        assert_eq!(region_from_config_text("[default]\nregion=us-east-2\n", "default").as_deref(), Some("us-east-2"));
        let none = env_of(&[("HOME", "/nonexistent-home")]);
        assert!(matches!(resolve_region(&none), Err(CredentialsError::NoRegion)));
    }
}

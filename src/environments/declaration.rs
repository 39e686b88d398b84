//! Declared environments: `--env NAME=PATH` as given on the command line, and what the
//! supervisor can tell about PATH without starting Python (which Python it was made for).

use std::path::{Path, PathBuf};

use super::directive::name_problem;

/// One `--env NAME=PATH` (PATH None: the embedded interpreter with nothing added).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declaration {
    pub name: String,
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeclarationError {
    #[error("--env {given}: expected NAME=PATH")]
    NoEquals { given: String },
    #[error("--env {given}: '{name}' is not a valid environment name: {reason}")]
    BadName {
        given: String,
        name: String,
        reason: String,
    },
    #[error("--env {name}: the path is empty")]
    EmptyPath { name: String },
    #[error("environment '{name}' is declared twice")]
    Duplicate { name: String },
    #[error("--default-env {name}: no such environment (declared: {declared})")]
    UnknownDefault { name: String, declared: String },
}

impl Declaration {
    /// Parses `NAME=PATH`.
    pub fn parse(given: &str) -> Result<Self, DeclarationError> {
        let (name, path) = given
            .split_once('=')
            .ok_or_else(|| DeclarationError::NoEquals {
                given: given.into(),
            })?;
        Self::named(name, path, given)
    }

    /// A declaration under `name` (checked) for `path`; `given` is quoted in errors.
    pub fn named(name: &str, path: &str, given: &str) -> Result<Self, DeclarationError> {
        if let Some(reason) = name_problem(name) {
            return Err(DeclarationError::BadName {
                given: given.into(),
                name: name.into(),
                reason,
            });
        }
        if path.trim().is_empty() {
            return Err(DeclarationError::EmptyPath { name: name.into() });
        }
        Ok(Self {
            name: name.into(),
            path: Some(PathBuf::from(path)),
        })
    }
}

/// The `major.minor` of the Python an environment was made for, read from its `pyvenv.cfg`
/// (venvs) or its single `lib/pythonX.Y/site-packages` (Nix environments, prefixes).
pub fn python_of(path: &Path) -> Result<(u32, u32), String> {
    if !path.is_dir() {
        return Err(format!("{} is not a directory", path.display()));
    }
    if let Ok(config) = std::fs::read_to_string(path.join("pyvenv.cfg")) {
        let version = config.lines().find_map(|line| {
            let (key, value) = line.split_once('=')?;
            matches!(key.trim(), "version" | "version_info").then(|| value.trim().to_owned())
        });
        if let Some(version) = version.as_deref().and_then(major_minor) {
            return Ok(version);
        }
    }
    let mut found: Vec<(u32, u32)> = std::fs::read_dir(path.join("lib"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|entry| entry.path().join("site-packages").is_dir())
                .filter_map(|entry| {
                    major_minor(entry.file_name().to_str()?.strip_prefix("python")?)
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort_unstable();
    found.dedup();
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(format!(
            "{} has no lib/python3.X/site-packages: it is not a venv or a Nix Python environment",
            path.display()
        )),
        many => Err(format!(
            "{} holds site-packages for several Pythons ({}); cannot tell which it is for",
            path.display(),
            many.iter()
                .map(|(major, minor)| format!("{major}.{minor}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// `3.11` from `3.11`, `3.11.7`, `3.11.7.final.0`.
pub fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_and_path() {
        assert_eq!(
            Declaration::parse("bio=/nix/store/x-env").unwrap(),
            Declaration {
                name: "bio".into(),
                path: Some("/nix/store/x-env".into())
            }
        );
        assert_eq!(
            Declaration::parse("d=/a=b").unwrap().path,
            Some("/a=b".into()),
            "only the first '=' splits"
        );
        for (bad, expected) in [
            ("bio", "expected NAME=PATH"),
            ("Bio=/x", "'Bio' is not a valid environment name"),
            ("=/x", "the name is empty"),
            ("bio=", "the path is empty"),
        ] {
            let error = Declaration::parse(bad).unwrap_err().to_string();
            assert!(error.contains(expected), "{bad}: {error}");
        }
    }

    #[test]
    fn reads_the_python_of_a_venv_and_of_a_prefix() {
        let venv = tempfile::tempdir().unwrap();
        std::fs::write(
            venv.path().join("pyvenv.cfg"),
            "home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.12.1\n",
        )
        .unwrap();
        assert_eq!(python_of(venv.path()), Ok((3, 12)));

        let prefix = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(prefix.path().join("lib/python3.13/site-packages")).unwrap();
        std::fs::create_dir_all(prefix.path().join("lib/pkgconfig")).unwrap();
        assert_eq!(python_of(prefix.path()), Ok((3, 13)));

        let empty = tempfile::tempdir().unwrap();
        assert!(python_of(empty.path())
            .unwrap_err()
            .contains("has no lib/python3.X/site-packages"));
        assert!(python_of(&empty.path().join("missing"))
            .unwrap_err()
            .contains("is not a directory"));
    }
}

//! Variant files (`variants/<name>.toml`): the Python packages an environment must provide.
//! The same files drive the Nix flake and `scripts/make-venv`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Variant {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub packages: Vec<Package>,
    /// Modules each worker of this environment imports once, before it forks any run, so runs
    /// find them loaded. Optional; none by default (a cold environment starts fastest).
    #[serde(default)]
    pub preload: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Package {
    /// nixpkgs `python3Packages` attribute.
    pub nix: String,
    /// PyPI name, when it differs from `nix`.
    pub pypi: Option<String>,
    /// Module to import, when it differs from `nix`.
    pub import: Option<String>,
}

impl Package {
    pub fn module(&self) -> &str {
        self.import.as_deref().unwrap_or(&self.nix)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VariantError {
    #[error("cannot read variant file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("variant file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
}

impl Variant {
    pub fn load(path: &Path) -> Result<Self, VariantError> {
        let text = std::fs::read_to_string(path).map_err(|source| VariantError::Read {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| VariantError::Parse {
            path: path.into(),
            source,
        })
    }

    pub fn modules(&self) -> Vec<String> {
        self.packages
            .iter()
            .map(|p| p.module().to_owned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preload_is_optional_and_read_when_given() {
        let plain: Variant = toml::from_str("name = \"x\"").unwrap();
        assert!(plain.preload.is_empty());
        let warm: Variant =
            toml::from_str("name = \"x\"\npreload = [\"json\", \"decimal\"]").unwrap();
        assert_eq!(warm.preload, ["json", "decimal"]);
    }
}

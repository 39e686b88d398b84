//! The plugin's name: what Metadata reports and the prefix of every handler name.

use std::path::Path;

pub const DEFAULT_NAME: &str = "python";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `--name` if given, else `<name>` from an executable called `qntx-<name>-plugin`, else `python`.
pub fn plugin_name(flag: Option<&str>, argv0: Option<&str>) -> String {
    if let Some(name) = flag.map(str::trim).filter(|n| !n.is_empty()) {
        return name.to_owned();
    }
    argv0
        .and_then(|path| Path::new(path).file_name()?.to_str())
        .and_then(|file| {
            let name = file.strip_prefix("qntx-")?;
            Some(name.strip_suffix("-plugin").unwrap_or(name))
        })
        .filter(|name| !name.is_empty())
        .unwrap_or(DEFAULT_NAME)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::plugin_name;

    #[test]
    fn flag_wins_over_file_name() {
        assert_eq!(plugin_name(Some("bio"), Some("/x/qntx-data-plugin")), "bio");
    }

    #[test]
    fn file_name_gives_the_name() {
        assert_eq!(
            plugin_name(None, Some("/opt/plugins/qntx-data-plugin")),
            "data"
        );
        assert_eq!(plugin_name(None, Some("qntx-python-plugin")), "python");
        assert_eq!(plugin_name(None, Some("/opt/plugins/qntx-bio")), "bio");
    }

    #[test]
    fn anything_else_is_python() {
        assert_eq!(plugin_name(None, Some("/usr/bin/my-plugin")), "python");
        assert_eq!(plugin_name(None, Some("qntx--plugin")), "python");
        assert_eq!(plugin_name(Some("  "), None), "python");
    }
}

//! The plugin's one canvas glyph: its definition for `RegisterGlyphs` and the assets it needs,
//! all inside the binary (no CDN, no network).
//!
//! The host keys plugin glyph types by a class name built from the plugin's name and skips a
//! second def with the same class, so only a plugin's first `GlyphDef` ever reaches the canvas
//! (../shared/glyphs.md). Hence exactly one def; a plugin with several environments offers
//! them inside the glyph, through a picker filled from `GET /environments`.

use serde_json::json;

use super::Reply;
use crate::proto::GlyphDef;

/// Where the glyph's ES module is served (under the plugin's HTTP prefix).
pub const MODULE_PATH: &str = "/glyph/module.js";
/// An alias of `/execute` that always reaches the plugin. For a plugin named `python` the host
/// answers `/api/python/execute` itself (protocol.md §4.4): it runs the code through
/// `PythonService.Execute`, drops the body's `env` and `upstream_attestation`, and nests the
/// answer under `result`. The glyph posts here in that case.
pub const RUN_PATH: &str = "/glyph/execute";
/// The glyph: `render(glyph, ui)`, as the host's UI calls it.
pub const MODULE: &str = include_str!("web/glyph.js");
/// The page of `--http`: the glyph module hosted by a stand-in for the host's `ui`.
pub const PAGE: &str = include_str!("web/index.html");

/// The canvas glyph for a plugin serving `environments` (the default first).
///
/// The symbol must be unique across plugins and never the host's own `py`: one environment
/// gives `py:<env>` (`py:bio`), several give `py:*` for the `python` provider and
/// `py:<plugin>:*` for any other name.
pub fn definition(plugin: &str, environments: &[String]) -> GlyphDef {
    let (symbol, title) = match environments {
        [single] => (
            format!("py:{single}"),
            format!("Python · {single} environment"),
        ),
        several => {
            let symbol = if plugin == "python" {
                "py:*".to_owned()
            } else {
                format!("py:{plugin}:*")
            };
            (symbol, format!("Python · {}", several.join(" · ")))
        }
    };
    GlyphDef {
        label: symbol.clone(),
        symbol,
        title,
        content_path: String::new(),
        css_path: String::new(),
        default_width: 560,
        default_height: 460,
        module_path: MODULE_PATH.into(),
    }
}

/// `GET /glyph-module.js`: the UI probes this self-describing path (meant for TypeScript
/// plugins) for every plugin. This plugin describes its glyph through `RegisterGlyphs`, so the
/// answer is a deliberate 410: not a 200 (the UI would load a second copy of the glyph), and not
/// a 404 (the host retries those).
pub fn self_describing_probe() -> Reply {
    Reply::json(
        410,
        &json!({
            "error": format!(
                "this plugin does not serve a self-describing glyph module; its glyph comes from \
                 RegisterGlyphs, with the module at {MODULE_PATH}"
            ),
            "module_path": MODULE_PATH,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::definition;

    #[test]
    fn one_environment_is_named_several_are_a_star() {
        let single = definition("bio", &["bio".into()]);
        assert_eq!(
            (single.symbol.as_str(), single.label.as_str()),
            ("py:bio", "py:bio")
        );
        let several = definition("python", &["bio".into(), "data".into()]);
        assert_eq!(several.symbol, "py:*");
        assert_eq!(several.title, "Python · bio · data");
        assert_eq!(
            definition("lab", &["a".into(), "b".into()]).symbol,
            "py:lab:*"
        );
        assert_ne!(definition("py", &["py".into()]).symbol, "py");
    }
}

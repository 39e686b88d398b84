//! Handler names: what the plugin announces and how an incoming raw name finds its handler.
//!
//! | raw name | runs |
//! |---|---|
//! | `<plugin>.script` | the code in the job payload (`{"content": …}`) |
//! | `<plugin>.__reload` | re-reads the catalog (fired by the plugin's own watcher) |
//! | `<plugin>.<key>` | saved handler `<key>`: its `@handler` function, else `main()`, else by trigger |
//! | `<plugin>.<key>@<function>` | that function of handler `<key>`: one per `@watch` and `@schedule` |
//!
//! `<key>` is the handler attestation's subject, as-is (dots and slashes included). Python
//! function names cannot contain `@`, so the last `@` separates key and function; a key that
//! itself contains `@` still resolves, because exact keys are tried first.

pub const SCRIPT: &str = "script";
pub const RELOAD: &str = "__reload";
/// Id of the watcher on the plugin's own handler attestations (the host stores `<plugin>-<id>`).
pub fn reload_watcher_id(plugin: &str) -> String {
    format!("{plugin}-handler-reload")
}

pub fn builtin(plugin: &str, which: &str) -> String {
    format!("{plugin}.{which}")
}

pub fn handler(plugin: &str, key: &str) -> String {
    format!("{plugin}.{key}")
}

pub fn function(plugin: &str, key: &str, function: &str) -> String {
    format!("{plugin}.{key}@{function}")
}

/// The host's registry key (schedules, queued jobs) for a raw name.
pub fn host_key(plugin: &str, raw: &str) -> String {
    format!("{plugin}/{raw}")
}

/// What an incoming raw handler name asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    Script,
    Reload,
    Handler {
        key: &'a str,
        function: Option<&'a str>,
    },
    /// Not one of this plugin's names.
    Foreign,
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}

/// Resolves a raw name; `is_key` tells whether a string is a known handler key.
pub fn route<'a>(plugin: &str, raw: &'a str, is_key: impl Fn(&str) -> bool) -> Route<'a> {
    let Some(rest) = raw.strip_prefix(plugin).and_then(|r| r.strip_prefix('.')) else {
        return Route::Foreign;
    };
    match rest {
        SCRIPT => Route::Script,
        RELOAD => Route::Reload,
        "" => Route::Foreign,
        _ if is_key(rest) => Route::Handler {
            key: rest,
            function: None,
        },
        _ => match rest.rsplit_once('@') {
            Some((key, function)) if !key.is_empty() && is_identifier(function) => Route::Handler {
                key,
                function: Some(function),
            },
            _ => Route::Handler {
                key: rest,
                function: None,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let known = |k: &str| k == "odd@name";
        assert_eq!(route("python", "python.script", known), Route::Script);
        assert_eq!(route("python", "python.__reload", known), Route::Reload);
        assert_eq!(
            route("python", "python.cleanup", known),
            Route::Handler {
                key: "cleanup",
                function: None
            }
        );
        assert_eq!(
            route("python", "python.a.b/c@on_reading", known),
            Route::Handler {
                key: "a.b/c",
                function: Some("on_reading")
            }
        );
        assert_eq!(
            route("python", "python.odd@name", known),
            Route::Handler {
                key: "odd@name",
                function: None
            }
        );
        assert_eq!(
            route("python", "python.x@1bad", known),
            Route::Handler {
                key: "x@1bad",
                function: None
            }
        );
        assert_eq!(route("python", "bio.cleanup", known), Route::Foreign);
        assert_eq!(route("python", "pythonx.cleanup", known), Route::Foreign);
        assert_eq!(route("python", "python.", known), Route::Foreign);
    }
}

//! Packages: `/modules` and `/uv/check` (does a module import, in which version) and
//! `/uv/install` (answered with how to add a package, never by installing).
//!
//! Why no install over HTTP, even into a writable venv: the variant file is the single source
//! of an environment (Nix and scripts/make-venv both build from it), so a package installed by
//! a click would vanish at the next rebuild and the same plugin would behave differently on two
//! machines; workers that already imported a package keep the old version until they restart,
//! so an upgrade would apply to some runs and not others; and a pip install runs the package's
//! build code with the plugin's rights, on a browser request, next to runs in progress.

use serde::Deserialize;
use serde_json::{json, Value};

use super::environments::{self, Status};
use super::{parse_body, parse_object, query_param, Reply};
use crate::ipc::Program;
use crate::service::Plugin;

/// `GET /modules` without a list checks these (the existing plugin's declared default).
const DEFAULT_MODULES: &[&str] = &["numpy", "pandas", "scipy", "matplotlib"];

/// Imports each name in `upstream` (a list) and reports `[name, version or None, error or None]`.
const CHECK_PROGRAM: &str = r#"import importlib, importlib.metadata
_result = []
for _name in upstream:
    try:
        _module = importlib.import_module(_name)
    except BaseException as _exc:
        _result.append([_name, None, f"{type(_exc).__name__}: {_exc}"])
        continue
    _version = getattr(_module, "__version__", None)
    if _version is None:
        try:
            _version = importlib.metadata.version(_name)
        except Exception:
            _version = None
    _result.append([_name, None if _version is None else str(_version), None])
"#;

struct Checked {
    module: String,
    version: Option<String>,
    error: Option<String>,
}

/// Imports `modules` in a worker of `env`, through the same door as every run (so it is
/// routed, limited and isolated like one).
async fn import_modules(
    plugin: &Plugin,
    env: &Status,
    modules: &[String],
) -> Result<Vec<Checked>, Reply> {
    let program = Program {
        upstream_json: Some(json!(modules).to_string()),
        ..Program::new(CHECK_PROGRAM.into(), "<module check>")
    };
    let execution = plugin
        .execute(program, Some(&env.name), None)
        .await
        .map_err(|e| Reply::error(503, e.to_string()))?;
    if !execution.success {
        let reason = execution.error.unwrap_or_default();
        return Err(Reply::error(
            500,
            format!(
                "cannot check modules in environment '{}': {reason}",
                env.name
            ),
        ));
    }
    let rows: Vec<(String, Option<String>, Option<String>)> =
        serde_json::from_value(execution.result)
            .map_err(|e| Reply::error(500, format!("the module check answered oddly: {e}")))?;
    Ok(rows
        .into_iter()
        .map(|(module, version, error)| Checked {
            module,
            version,
            error,
        })
        .collect())
}

#[derive(Deserialize, Default)]
struct ModulesBody {
    modules: Option<Vec<String>>,
    env: Option<String>,
}

/// `GET /modules`: `{modules: {name: bool}}` (plus versions and errors, and the environment).
pub async fn modules(plugin: &Plugin, path: &str, body: &[u8]) -> Reply {
    // As in the existing plugin, a body that cannot be read means "the defaults".
    let body: ModulesBody = parse_body::<Option<ModulesBody>>(body)
        .ok()
        .flatten()
        .unwrap_or_default();
    let env_name = query_param(path, "env").or(body.env);
    let env = match environments::select(plugin, env_name.as_deref()) {
        Ok(env) => env,
        Err(reply) => return reply,
    };
    let names: Vec<String> = match body.modules.filter(|m| !m.is_empty()) {
        Some(names) => names,
        None => DEFAULT_MODULES.iter().map(|m| m.to_string()).collect(),
    };
    match import_modules(plugin, &env, &names).await {
        Ok(checked) => {
            let available: serde_json::Map<String, Value> = checked
                .iter()
                .map(|c| (c.module.clone(), Value::Bool(c.error.is_none())))
                .collect();
            let details: Vec<Value> = checked
                .iter()
                .map(|c| json!({"module": c.module, "version": c.version, "error": c.error}))
                .collect();
            Reply::json(
                200,
                &json!({"env": env.name, "modules": available, "details": details}),
            )
        }
        Err(reply) => reply,
    }
}

#[derive(Deserialize, Default)]
struct CheckBody {
    module: Option<String>,
    env: Option<String>,
}

/// `GET /uv/check` (alias `/pip/check`): the module comes in the body, as in the existing
/// plugin, or as `?module=` (browsers send no body with GET).
pub async fn check(plugin: &Plugin, path: &str, body: &[u8]) -> Reply {
    let body: CheckBody = match parse_body::<Option<CheckBody>>(body) {
        Ok(body) => body.unwrap_or_default(),
        Err(reply) => return reply,
    };
    let Some(module) = query_param(path, "module")
        .or(body.module)
        .filter(|m| !m.trim().is_empty())
    else {
        return Reply::error(400, "Missing 'module' field");
    };
    let env = match environments::select(plugin, query_param(path, "env").or(body.env).as_deref()) {
        Ok(env) => env,
        Err(reply) => return reply,
    };
    match import_modules(plugin, &env, std::slice::from_ref(&module)).await {
        Ok(mut checked) => {
            let Some(found) = checked.pop() else {
                return Reply::error(500, "the module check answered nothing");
            };
            Reply::json(
                200,
                &json!({
                    "module": found.module,
                    "available": found.error.is_none(),
                    "version": found.version,
                    "error": found.error,
                    "env": env.name,
                }),
            )
        }
        Err(reply) => reply,
    }
}

#[derive(Deserialize)]
struct InstallBody {
    package: Option<String>,
    env: Option<String>,
}

/// `POST /uv/install` (alias `/pip/install`): the execution response with `success: false` and
/// an `error` that says how to add the package to that environment.
pub fn install(plugin: &Plugin, body: &[u8]) -> Reply {
    let body: InstallBody = match parse_object(body) {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    let Some(package) = body.package.filter(|p| !p.trim().is_empty()) else {
        return Reply::error(400, "Missing 'package' field");
    };
    let env = match environments::select(plugin, body.env.as_deref()) {
        Ok(env) => env,
        Err(reply) => return reply,
    };
    Reply::json(
        400,
        &json!({
            "success": false,
            "stdout": "",
            "stderr": "",
            "result": {"installed": false, "package": package, "env": env.name, "read_only": env.read_only},
            "error": how_to_add(&env, &package),
            "duration_ms": 0,
        }),
    )
}

fn how_to_add(env: &Status, package: &str) -> String {
    let name = &env.name;
    let variant = format!("variants/{name}.toml");
    let entry = format!("[[packages]] nix = \"{package}\"");
    match (&env.path, env.read_only) {
        (Some(path), true) => format!(
            "environment '{name}' was built by Nix ({path}) and is read-only: add {entry} to \
             {variant} (the nixpkgs python3Packages name; `pypi =` if pip's name differs) and \
             rebuild the plugin with nix build"
        ),
        (Some(path), false) => format!(
            "packages are not installed over HTTP: add {entry} to {variant} and run \
             scripts/make-venv {name} --dest {path} (or {path}/bin/python -m pip install \
             {package}), then restart the plugin so its workers import it"
        ),
        (None, _) => format!(
            "packages are not installed over HTTP: add {entry} to {variant} and rebuild the \
             environment (nix build, or scripts/make-venv {name}), then restart the plugin"
        ),
    }
}

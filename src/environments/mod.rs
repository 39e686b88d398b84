//! Named Python environments behind one provider: each has its own pool of workers (embedding
//! CPython with that environment's site-packages and nothing from another), all pools share one
//! worker budget, and every run is routed to one of them by its `# py:<name>` line, by an
//! explicit request, or to the default.
//!
//! Why: the host keeps a single Python-provider slot (protocol.md §4.1), so separate `bio` and
//! `data` plugins cannot both answer the `py` glyph; one provider with several environments can.

pub mod declaration;
pub mod directive;
mod status;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::pool::{Budget, Pool, PoolConfig, WorkerCommand};
use crate::variant::Variant;
pub use declaration::{Declaration, DeclarationError};
pub use directive::DirectiveError;
pub use status::EnvironmentStatus;

pub struct Environment {
    pub name: String,
    /// The venv or Nix environment; None for the embedded interpreter alone.
    pub path: Option<PathBuf>,
    pub pool: Arc<Pool>,
    /// Why this environment cannot run anything (found at start-up), if it cannot.
    pub refused: Option<String>,
    /// The variant file's name, when one describes this environment.
    pub variant: Option<String>,
}

pub struct Environments {
    list: Vec<Environment>,
    default: usize,
    budget: Arc<Budget>,
    /// The Python version this binary embeds, e.g. `3.11.7`.
    embedded: String,
}

/// How workers are started, apart from the environment they serve.
#[derive(Debug, Clone)]
pub struct WorkerSetup {
    pub executable: PathBuf,
    /// Arguments for every worker (after `worker`), e.g. the log level.
    pub args: Vec<String>,
    pub queue_capacity: usize,
    pub interrupt_grace: Duration,
    pub startup_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Why a run cannot be routed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Directive(#[from] DirectiveError),
    #[error("no Python environment named '{name}' (asked for by {asked_by}); this plugin has {available}")]
    Unknown {
        name: String,
        asked_by: String,
        available: String,
    },
    #[error(
        "the request asks for environment '{requested}' but the program's `# py:{directive}` \
         (line {line}) names '{directive}'; remove one or make them agree"
    )]
    Disagree {
        requested: String,
        directive: String,
        line: usize,
    },
    /// The environment exists but cannot run anything; the reason names it.
    #[error("{0}")]
    Refused(String),
}

impl Environments {
    /// One pool per declaration, none started. `default` names the default environment (else
    /// the first). An environment made for another Python is kept, refused, with the reason.
    pub fn new(
        declarations: Vec<Declaration>,
        default: Option<&str>,
        variants: &[(String, Variant)],
        workers: usize,
        setup: &WorkerSetup,
    ) -> Result<Arc<Self>, DeclarationError> {
        let mut names = std::collections::BTreeSet::new();
        for declaration in &declarations {
            if !names.insert(declaration.name.as_str()) {
                return Err(DeclarationError::Duplicate {
                    name: declaration.name.clone(),
                });
            }
        }
        let default = match default {
            None => 0,
            Some(name) => declarations
                .iter()
                .position(|d| d.name == name)
                .ok_or_else(|| DeclarationError::UnknownDefault {
                    name: name.into(),
                    declared: declarations
                        .iter()
                        .map(|d| d.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?,
        };
        let embedded = embedded_python();
        let budget = Budget::new(workers);
        let list = declarations
            .into_iter()
            .enumerate()
            .map(|(id, declaration)| {
                let variant = variants.iter().find(|(name, _)| *name == declaration.name);
                let refused = declaration
                    .path
                    .as_deref()
                    .and_then(|path| refusal(&declaration.name, path, &embedded));
                if let Some(reason) = &refused {
                    tracing::error!(environment = %declaration.name, %reason, "environment refused");
                }
                let mut args = setup.args.clone();
                if let Some(path) = &declaration.path {
                    args.push("--python-env".into());
                    args.push(path.display().to_string());
                }
                if let Some((_, variant)) = variant.filter(|(_, v)| !v.preload.is_empty()) {
                    args.push("--preload".into());
                    args.push(variant.preload.join(","));
                }
                let config = PoolConfig {
                    queue_capacity: setup.queue_capacity,
                    worker: WorkerCommand {
                        executable: setup.executable.clone(),
                        args,
                    },
                    interrupt_grace: setup.interrupt_grace,
                    startup_timeout: setup.startup_timeout,
                    idle_timeout: setup.idle_timeout,
                    check_modules: variant.map(|(_, v)| v.modules()).unwrap_or_default(),
                };
                Environment {
                    name: declaration.name,
                    path: declaration.path,
                    pool: Pool::new(id, config, Arc::clone(&budget)),
                    refused,
                    variant: variant.map(|(_, v)| v.name.clone()),
                }
            })
            .collect();
        Ok(Arc::new(Self {
            list,
            default,
            budget,
            embedded,
        }))
    }

    pub fn default_env(&self) -> &Environment {
        &self.list[self.default]
    }

    pub fn default_name(&self) -> &str {
        &self.default_env().name
    }

    pub fn names(&self) -> Vec<String> {
        self.list.iter().map(|e| e.name.clone()).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Environment> {
        self.list.iter()
    }

    pub fn get(&self, name: &str) -> Option<&Environment> {
        self.list.iter().find(|e| e.name == name)
    }

    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    pub fn embedded_python(&self) -> &str {
        &self.embedded
    }

    /// The environment a program runs in: its `# py:<name>` line, else `requested` (an HTTP
    /// body's `env`, a glyph's picker), else the default. Both given must agree.
    pub fn route(&self, code: &str, requested: Option<&str>) -> Result<&Environment, RouteError> {
        let directive = directive::find(code)?;
        let requested = requested.map(str::trim).filter(|r| !r.is_empty());
        let (name, asked_by) = match (directive, requested) {
            (Some(directive), Some(requested)) if directive.name != requested => {
                return Err(RouteError::Disagree {
                    requested: requested.into(),
                    directive: directive.name.into(),
                    line: directive.line,
                })
            }
            (Some(directive), _) => (
                directive.name,
                format!("`# py:{}` on line {}", directive.name, directive.line),
            ),
            (None, Some(requested)) => (requested, "the request's 'env'".to_owned()),
            (None, None) => return self.usable(self.default_env()),
        };
        let environment = self.get(name).ok_or_else(|| RouteError::Unknown {
            name: name.into(),
            asked_by,
            available: self.available(),
        })?;
        self.usable(environment)
    }

    fn usable<'a>(&self, environment: &'a Environment) -> Result<&'a Environment, RouteError> {
        match &environment.refused {
            Some(reason) => Err(RouteError::Refused(reason.clone())),
            None => Ok(environment),
        }
    }

    /// `bio, data (default: bio)` or `only 'python'`.
    fn available(&self) -> String {
        match self.list.as_slice() {
            [only] => format!("only '{}'", only.name),
            _ => format!(
                "{} (default: {})",
                self.names().join(", "),
                self.default_name()
            ),
        }
    }

    /// A pool whose workers can start, for work any environment can do (reading handlers'
    /// declarations with `ast`): the default one when it is usable.
    pub fn any_usable(&self) -> Option<&Environment> {
        std::iter::once(self.default_env())
            .chain(&self.list)
            .find(|e| e.refused.is_none())
    }

    pub fn statuses(&self) -> Vec<EnvironmentStatus> {
        self.list
            .iter()
            .enumerate()
            .map(|(index, env)| EnvironmentStatus::of(env, index == self.default, &self.embedded))
            .collect()
    }

    /// Refuses new work and kills every worker of every environment.
    pub fn shutdown(&self) {
        for environment in &self.list {
            environment.pool.shutdown();
        }
    }
}

/// Why an environment at `path` cannot serve this binary, if it cannot: it must be made for the
/// Python minor version the binary embeds, since compiled extensions are built for one.
fn refusal(name: &str, path: &std::path::Path, embedded: &str) -> Option<String> {
    let embedded_minor = declaration::major_minor(embedded)?;
    match declaration::python_of(path) {
        Err(problem) => Some(format!("environment '{name}': {problem}")),
        Ok(found) if found != embedded_minor => Some(format!(
            "environment '{name}' ({}) is for Python {}.{}, but this plugin embeds Python {embedded}; \
             make it with Python {}.{} (scripts/make-venv <variant> --python python{}.{}) or use a \
             plugin built with Python {}.{}",
            path.display(),
            found.0,
            found.1,
            embedded_minor.0,
            embedded_minor.1,
            embedded_minor.0,
            embedded_minor.1,
            found.0,
            found.1,
        )),
        Ok(_) => None,
    }
}

/// The version of the libpython this binary is linked with, e.g. `3.11.7`.
pub fn embedded_python() -> String {
    // Py_GetVersion formats into one static buffer on every call, so two threads calling it at
    // once can read each other's half-written text: read it once per process.
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION
        .get_or_init(|| {
            // SAFETY: Py_GetVersion only formats compile-time constants into a static buffer;
            // it is one of the calls CPython documents as safe before the interpreter is
            // initialised (the supervisor never initialises it), and the OnceLock keeps any
            // other thread from calling it meanwhile.
            let version = unsafe { std::ffi::CStr::from_ptr(pyo3::ffi::Py_GetVersion()) };
            version
                .to_string_lossy()
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> WorkerSetup {
        WorkerSetup {
            executable: "/nonexistent".into(),
            args: Vec::new(),
            queue_capacity: 1,
            interrupt_grace: Duration::from_secs(1),
            startup_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
        }
    }

    fn environments(names: &[&str], default: Option<&str>) -> Arc<Environments> {
        let declarations = names
            .iter()
            .map(|name| Declaration {
                name: (*name).into(),
                path: None,
            })
            .collect();
        Environments::new(declarations, default, &[], 2, &setup()).unwrap()
    }

    fn routed<'a>(envs: &'a Environments, code: &str, requested: Option<&str>) -> &'a str {
        &envs.route(code, requested).unwrap().name
    }

    fn route_error(envs: &Environments, code: &str, requested: Option<&str>) -> String {
        match envs.route(code, requested) {
            Ok(env) => panic!("routed to {}", env.name),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn directive_then_request_then_default() {
        let envs = environments(&["bio", "data"], Some("data"));
        assert_eq!(routed(&envs, "x = 1", None), "data");
        assert_eq!(routed(&envs, "# py:bio\nx = 1", None), "bio");
        assert_eq!(routed(&envs, "x = 1", Some("bio")), "bio");
        assert_eq!(routed(&envs, "# py:bio", Some("bio")), "bio");
        assert_eq!(
            routed(&envs, "x = 1", Some(" ")),
            "data",
            "blank is no request"
        );
    }

    #[test]
    fn errors_say_what_was_asked_and_what_exists() {
        let envs = environments(&["bio", "data"], None);
        let error = route_error(&envs, "# py:ml\n", None);
        assert_eq!(
            error,
            "no Python environment named 'ml' (asked for by `# py:ml` on line 1); this plugin has bio, data (default: bio)"
        );
        let error = route_error(&envs, "x", Some("ml"));
        assert!(
            error.contains("asked for by the request's 'env'"),
            "{error}"
        );
        let error = route_error(&envs, "\n# py:data", Some("bio"));
        assert!(
            error.contains("asks for environment 'bio' but the program's `# py:data` (line 2)"),
            "{error}"
        );
    }

    #[test]
    fn declarations_are_checked() {
        let setup = setup();
        let twice = vec![
            Declaration::parse("a=/x").unwrap(),
            Declaration::parse("a=/y").unwrap(),
        ];
        assert!(matches!(
            Environments::new(twice, None, &[], 1, &setup),
            Err(DeclarationError::Duplicate { .. })
        ));
        let one = vec![Declaration::parse("a=/x").unwrap()];
        let error = Environments::new(one, Some("b"), &[], 1, &setup)
            .err()
            .unwrap()
            .to_string();
        assert_eq!(error, "--default-env b: no such environment (declared: a)");
    }

    #[test]
    fn an_environment_for_another_python_is_refused_naming_both_versions() {
        let embedded = embedded_python();
        let (major, minor) = declaration::major_minor(&embedded).unwrap();
        let other = tempfile::tempdir().unwrap();
        std::fs::write(
            other.path().join("pyvenv.cfg"),
            format!("version = {major}.{}.0\n", minor + 1),
        )
        .unwrap();
        let reason = refusal("bio", other.path(), &embedded).unwrap();
        assert!(
            reason.starts_with("environment 'bio' (")
                && reason.contains(&format!("is for Python {major}.{}", minor + 1))
                && reason.contains(&format!("embeds Python {embedded}")),
            "{reason}"
        );
        std::fs::write(
            other.path().join("pyvenv.cfg"),
            format!("version = {major}.{minor}.0\n"),
        )
        .unwrap();
        assert_eq!(refusal("bio", other.path(), &embedded), None);
    }
}

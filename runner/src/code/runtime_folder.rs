//! A local runtime folder: what `/var/runtime` is in AWS's base images, made on a
//! laptop by `runner runtime install` from the package registries.
//!
//! It holds the runtime interface client, the SDK Lambda's runtime ships (boto3; the
//! `@aws-sdk/*` v3 packages a function imports), and a `bootstrap` that puts the
//! layers' folders on the import path in Lambda's order before starting the client on
//! `$_HANDLER`. A marker file says which runtime and interpreter it was made for, so
//! the runner refuses a function of another runtime with the command that makes the
//! right folder, and a function run with the folder gets its runtime without
//! `--runtime`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::code::runtime::Runtime;
use crate::emulator::bootstrap::BOOTSTRAP;

/// The marker a runtime folder made by `runner runtime install` holds.
pub(crate) const MARKER: &str = "immortal-runtime.json";

/// The Python runtime interface client (as in scripts/setup and the tests).
pub(crate) const AWSLAMBDARIC: &str = "awslambdaric==4.2.2";
/// The Node.js runtime interface client.
pub(crate) const AWS_LAMBDA_RIC: &str = "aws-lambda-ric@3.3.0";
/// The AWS SDK for Python that Python runtimes ship. Lambda updates each runtime's
/// copy over time (the runtime's page in the Lambda guide lists the current one); one
/// recent version is pinned here so that folders are reproducible.
pub(crate) const BOTO3: &str = "boto3==1.43.11";

/// Where `runner runtime install RUNTIME` makes its folder without `--dir`: beside the
/// code cache, out of `runner cache prune`'s reach.
pub(crate) fn default_dir(cache_root: &Path, runtime: &Runtime) -> PathBuf {
    cache_root.join("runtimes").join(runtime.id())
}

/// What `runner runtime install` wrote into [`MARKER`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Installed {
    /// The runtime (`python3.11`, `nodejs20.x`).
    pub(crate) runtime: String,
    /// The interpreter the bootstrap starts.
    pub(crate) interpreter: PathBuf,
    /// Its version, as it reported it.
    pub(crate) interpreter_version: String,
    /// The packages installed (client, SDK, `--with`), as given to pip or npm.
    pub(crate) packages: Vec<String>,
}

impl Installed {
    /// The marker of runtime folder `dir`, when it has one.
    pub(crate) fn read(dir: &Path) -> Option<Installed> {
        let text = std::fs::read(dir.join(MARKER)).ok()?;
        serde_json::from_slice(&text).ok()
    }
}

/// Why a runtime folder could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InstallError {
    /// Not a runtime this command can make.
    #[error("`runner runtime install` makes python3.X and nodejsNN.x runtime folders, not {runtime}; {hint}")]
    Unsupported {
        /// What was asked.
        runtime: String,
        /// What to do instead.
        hint: String,
    },
    /// No interpreter of the runtime's version here.
    #[error("{runtime} needs {language} {version}, and {found}; {fix}")]
    NoInterpreter {
        /// The runtime.
        runtime: String,
        /// Python or Node.js.
        language: &'static str,
        /// The version it needs (3.12, 22).
        version: String,
        /// What was found instead.
        found: String,
        /// How to get it.
        fix: String,
    },
    /// pip or npm failed.
    #[error("{command} failed ({status}): {output}")]
    Tool {
        /// The command, shortly.
        command: String,
        /// Its exit status.
        status: String,
        /// The end of what it printed.
        output: String,
    },
    /// The folder could not be written.
    #[error("cannot write the runtime folder {dir}: {source}")]
    Io {
        /// The folder.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The language a runtime folder is made for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Language {
    /// `python3.X`: the minor version.
    Python { version: String },
    /// `nodejsNN.x`: the major version.
    Node { major: String },
}

impl Language {
    fn of(runtime: &Runtime) -> Result<Language, InstallError> {
        let id = runtime.id();
        let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
        match runtime.family_version() {
            Some(("python", version)) if version.strip_prefix("3.").is_some_and(digits) => {
                return Ok(Language::Python { version });
            }
            Some(("nodejs", major)) if digits(&major) && id.ends_with(".x") => {
                return Ok(Language::Node { major });
            }
            _ => {}
        }
        let hint = if runtime.is_custom() {
            "a custom runtime needs no runtime folder: its function brings its own bootstrap".to_owned()
        } else {
            format!(
                "run {runtime} functions on the runner image built on {}, or pass --runtime-dir DIR holding a bootstrap that starts its runtime interface client",
                runtime
                    .base_image()
                    .unwrap_or_else(|| "AWS's base image for it".to_owned())
            )
        };
        Err(InstallError::Unsupported {
            runtime: id.to_owned(),
            hint,
        })
    }
}

/// What `runner runtime install` is asked to make.
#[derive(Debug, Clone)]
pub(crate) struct InstallRequest {
    /// The runtime.
    pub(crate) runtime: Runtime,
    /// The folder.
    pub(crate) dir: PathBuf,
    /// More packages (`--with`), for pip or npm.
    pub(crate) with: Vec<String>,
    /// The interpreter to use instead of the one found.
    pub(crate) interpreter: Option<PathBuf>,
}

/// What an install did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InstallOutcome {
    /// The folder was made (or made again) for this request.
    Made(Installed),
    /// The folder already held exactly this.
    AlreadyThere(Installed),
}

/// Makes the runtime folder `request` asks for, unless it already holds exactly that:
/// into a sibling folder first, renamed into place when complete, so that a failed or
/// interrupted install never leaves a half folder a run would use.
pub(crate) fn install(request: &InstallRequest) -> Result<InstallOutcome, InstallError> {
    let language = Language::of(&request.runtime)?;
    let interpreter = find_interpreter(&request.runtime, &language, request.interpreter.as_deref())?;
    let packages = packages(&language, &request.with);
    let wanted = Installed {
        runtime: request.runtime.id().to_owned(),
        interpreter: interpreter.path.clone(),
        interpreter_version: interpreter.version.clone(),
        packages,
    };
    if Installed::read(&request.dir).as_ref() == Some(&wanted) && request.dir.join(BOOTSTRAP).is_file() {
        return Ok(InstallOutcome::AlreadyThere(wanted));
    }
    tracing::info!(
        runtime = %request.runtime,
        dir = %request.dir.display(),
        interpreter = %interpreter.path.display(),
        packages = %wanted.packages.join(" "),
        "making the runtime folder (pip or npm, from the package registry)"
    );
    let io = |source| InstallError::Io {
        dir: request.dir.clone(),
        source,
    };
    let parent = request.dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io)?;
    let name = request
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "runtime".to_owned());
    let partial = tempfile::Builder::new()
        .prefix(&format!(".{name}.partial-"))
        .tempdir_in(parent)
        .map_err(io)?;
    // The bootstrap names the final folder: it is written for where it will live.
    let bootstrap = match &language {
        Language::Python { version } => {
            pip_install(&interpreter.path, &partial.path().join("lib"), &wanted.packages)?;
            python_bootstrap(&request.runtime, version, &interpreter.path, &request.dir)
        }
        Language::Node { major } => {
            npm_install(&interpreter.path, partial.path(), &wanted.packages)?;
            node_bootstrap(&request.runtime, major, &interpreter.path, &request.dir)
        }
    };
    write_executable(&partial.path().join(BOOTSTRAP), &bootstrap).map_err(io)?;
    let marker = serde_json::to_vec_pretty(&wanted).expect("a marker serializes");
    std::fs::write(partial.path().join(MARKER), marker).map_err(io)?;
    if request.dir.exists() {
        std::fs::remove_dir_all(&request.dir).map_err(io)?;
    }
    let made = partial.keep();
    std::fs::rename(&made, &request.dir).map_err(io)?;
    Ok(InstallOutcome::Made(wanted))
}

/// The packages a folder for `language` holds: the runtime interface client, the SDK
/// (Python's whole boto3; Node.js's v3 SDK is hundreds of packages, so only those given
/// with `--with`), then `with`.
fn packages(language: &Language, with: &[String]) -> Vec<String> {
    let base = match language {
        Language::Python { .. } => vec![AWSLAMBDARIC.to_owned(), BOTO3.to_owned()],
        Language::Node { .. } => vec![AWS_LAMBDA_RIC.to_owned()],
    };
    base.into_iter().chain(with.iter().cloned()).collect()
}

/// An interpreter and the version it reported.
struct Interpreter {
    path: PathBuf,
    version: String,
}

/// The version `program` reports (`3.12.1`, `20.20.2`), when it runs.
fn version_of(program: &Path, language: &Language) -> Option<String> {
    let args: &[&str] = match language {
        Language::Python { .. } => &["-c", "import platform; print(platform.python_version())"],
        Language::Node { .. } => &["-p", "process.versions.node"],
    };
    let out = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Whether `version` (`3.12.1`, `20.20.2`) is what `language` needs.
fn fits(version: &str, language: &Language) -> bool {
    match language {
        Language::Python { version: wanted } => {
            version == wanted
                || version
                    .strip_prefix(wanted.as_str())
                    .is_some_and(|rest| rest.starts_with('.'))
        }
        Language::Node { major } => version.split('.').next() == Some(major.as_str()),
    }
}

/// `name` on this process's PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").ok()?;
    let found = crate::emulator::bootstrap::on_path(&path, name).find(|p| p.is_file());
    found
}

/// The interpreter for `language`: the one given, else the first of the usual places
/// that runs and reports the runtime's version (`python3.12`, then pyenv's, then
/// `python3`; `node`). A pyenv shim on PATH that is not active answers nothing and is
/// passed over.
fn find_interpreter(runtime: &Runtime, language: &Language, given: Option<&Path>) -> Result<Interpreter, InstallError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    match (given, language) {
        (Some(path), _) => candidates.push(path.to_owned()),
        (None, Language::Python { version }) => {
            candidates.extend(on_path(&format!("python{version}")));
            let pyenv = std::env::var_os("PYENV_ROOT")
                .map(PathBuf::from)
                .or_else(|| dirs::home_dir().map(|h| h.join(".pyenv")));
            if let Some(versions) = pyenv.and_then(|root| std::fs::read_dir(root.join("versions")).ok()) {
                let mut found: Vec<PathBuf> = versions
                    .flatten()
                    .filter(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        name == *version || name.strip_prefix(version.as_str()).is_some_and(|r| r.starts_with('.'))
                    })
                    .map(|e| e.path().join("bin").join(format!("python{version}")))
                    .collect();
                found.sort();
                candidates.extend(found.into_iter().rev());
            }
            candidates.extend(on_path("python3"));
        }
        (None, Language::Node { .. }) => candidates.extend(on_path("node")),
    }
    let mut seen = Vec::new();
    for candidate in &candidates {
        match version_of(candidate, language) {
            Some(version) if fits(&version, language) => {
                let path = std::path::absolute(candidate).unwrap_or_else(|_| candidate.clone());
                return Ok(Interpreter { path, version });
            }
            Some(version) => seen.push(format!("{} is {version}", candidate.display())),
            None => {}
        }
    }
    let found = if seen.is_empty() {
        "none was found".to_owned()
    } else {
        seen.join(", ")
    };
    let (language_name, version, fix) = match language {
        Language::Python { version } => (
            "Python",
            version.clone(),
            format!(
                "install Python {version} (e.g. `pyenv install {version}`, `uv python install {version}`, or your distribution's python{version}) and run this again, or pass --interpreter /path/to/python{version}"
            ),
        ),
        Language::Node { major } => (
            "Node.js",
            major.clone(),
            format!(
                "install Node.js {major} (e.g. `nvm install {major}`, or NodeSource's nodejs {major}.x) and run this again, or pass --interpreter /path/to/node"
            ),
        ),
    };
    Err(InstallError::NoInterpreter {
        runtime: runtime.id().to_owned(),
        language: language_name,
        version,
        found,
        fix,
    })
}

/// The last lines of what a failed tool printed.
fn tail(out: &std::process::Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

fn run_tool(mut cmd: Command, label: String) -> Result<(), InstallError> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| InstallError::Tool {
            command: label.clone(),
            status: "not started".to_owned(),
            output: e.to_string(),
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(InstallError::Tool {
        command: label,
        status: out.status.to_string(),
        output: tail(&out),
    })
}

/// `python -m pip install --target lib PACKAGES`.
fn pip_install(python: &Path, lib: &Path, packages: &[String]) -> Result<(), InstallError> {
    let mut cmd = Command::new(python);
    cmd.args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
        .args(["--no-warn-script-location", "--root-user-action=ignore", "--target"])
        .arg(lib)
        .args(packages);
    run_tool(
        cmd,
        format!("{} -m pip install {}", python.display(), packages.join(" ")),
    )
}

/// `npm install --prefix DIR PACKAGES`, with npm beside `node` (aws-lambda-ric builds
/// native code: make runs on every core).
fn npm_install(node: &Path, dir: &Path, packages: &[String]) -> Result<(), InstallError> {
    let npm = node
        .parent()
        .map(|bin| bin.join("npm"))
        .filter(|npm| npm.is_file())
        .unwrap_or_else(|| PathBuf::from("npm"));
    let mut cmd = Command::new(&npm);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cmd.args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
        .arg(dir)
        .args(packages)
        .env("MAKEFLAGS", format!("-j{cores}"));
    if let Some(bin) = node.parent() {
        // npm's scripts (node-gyp, the client's build) start `node` by name.
        let path = std::env::var_os("PATH").unwrap_or_default();
        let joined = std::env::join_paths(std::iter::once(bin.to_owned()).chain(std::env::split_paths(&path)));
        if let Ok(joined) = joined {
            cmd.env("PATH", joined);
        }
    }
    run_tool(cmd, format!("npm install {}", packages.join(" ")))
}

fn write_executable(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

/// `s` quoted for sh.
fn sh(s: &Path) -> String {
    format!("'{}'", s.display().to_string().replace('\'', r"'\''"))
}

/// The lines every bootstrap ends with: the layers root (`/opt`, or where the runner
/// unpacked the layers locally: it says so in `IMMORTAL_OPT_DIR`), and Lambda's wrapper
/// script (`AWS_LAMBDA_EXEC_WRAPPER`), started with the runtime's command line as AWS's
/// bootstraps start it.
const WRAPPER: &str = r#"if [ -n "$AWS_LAMBDA_EXEC_WRAPPER" ]; then set -- "$AWS_LAMBDA_EXEC_WRAPPER" "$@"; fi
exec "$@"
"#;

/// A Python runtime's bootstrap. Lambda's import path: the function's code (the working
/// directory, first for `python -m`), the layers' `python/lib/python3.X/site-packages`
/// and `python/`, then the runtime's own packages (the client and boto3), so that a
/// function's or a layer's boto3 wins over the runtime's, as in Lambda.
fn python_bootstrap(runtime: &Runtime, version: &str, python: &Path, dir: &Path) -> String {
    format!(
        r#"#!/bin/sh
# {runtime}'s bootstrap, made by `runner runtime install {runtime}` (immortal).
opt="${{{opt_var}:-/opt}}"
export PYTHONPATH="$opt/python/lib/python{version}/site-packages:$opt/python:"{lib}"${{PYTHONPATH:+:$PYTHONPATH}}"
set -- {python} -m awslambdaric "$_HANDLER"
{WRAPPER}"#,
        opt_var = immortal_handler_sdk::container::OPT_DIR_VAR,
        lib = sh(&dir.join("lib")),
        python = sh(python),
    )
}

/// A Node.js runtime's bootstrap. Lambda's `NODE_PATH`: the layers'
/// `nodejs/nodeNN/node_modules` and `nodejs/node_modules`, then the runtime's own
/// modules (the SDK packages installed with `--with`).
fn node_bootstrap(runtime: &Runtime, major: &str, node: &Path, dir: &Path) -> String {
    format!(
        r#"#!/bin/sh
# {runtime}'s bootstrap, made by `runner runtime install {runtime}` (immortal).
opt="${{{opt_var}:-/opt}}"
export NODE_PATH="$opt/nodejs/node{major}/node_modules:$opt/nodejs/node_modules:"{modules}:{dir}"${{NODE_PATH:+:$NODE_PATH}}"
set -- {node} {ric} "$_HANDLER"
{WRAPPER}"#,
        opt_var = immortal_handler_sdk::container::OPT_DIR_VAR,
        modules = sh(&dir.join("node_modules")),
        dir = sh(dir),
        node = sh(node),
        ric = sh(&dir.join("node_modules/aws-lambda-ric/bin/index.mjs")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_it_makes_folders_for() {
        assert_eq!(
            Language::of(&Runtime::new("python3.12")).unwrap(),
            Language::Python { version: "3.12".into() }
        );
        assert_eq!(
            Language::of(&Runtime::new("nodejs22.x")).unwrap(),
            Language::Node { major: "22".into() }
        );
        for other in ["java21", "provided.al2023", "python3", "nodejs.x", "ruby3.3"] {
            let err = Language::of(&Runtime::new(other)).unwrap_err().to_string();
            assert!(err.contains(other), "{err}");
        }
    }

    #[test]
    fn versions_fit_by_minor_or_major() {
        let py = Language::Python { version: "3.12".into() };
        assert!(fits("3.12.1", &py));
        assert!(fits("3.12", &py));
        assert!(!fits("3.11.7", &py));
        assert!(!fits("3.120.0", &py));
        let node = Language::Node { major: "20".into() };
        assert!(fits("20.20.2", &node));
        assert!(!fits("22.1.0", &node));
        assert!(!fits("2.0.0", &node));
    }

    #[test]
    fn bootstraps_quote_their_paths_and_honour_the_wrapper() {
        let text = python_bootstrap(
            &Runtime::new("python3.12"),
            "3.12",
            Path::new("/usr/bin/python3.12"),
            Path::new("/home/o'neil/rt"),
        );
        assert!(text.contains(r#"'/home/o'\''neil/rt/lib'"#), "{text}");
        assert!(
            text.contains("$opt/python/lib/python3.12/site-packages:$opt/python:"),
            "{text}"
        );
        assert!(text.contains("AWS_LAMBDA_EXEC_WRAPPER"), "{text}");
        let text = node_bootstrap(
            &Runtime::new("nodejs20.x"),
            "20",
            Path::new("/usr/bin/node"),
            Path::new("/rt"),
        );
        assert!(
            text.contains("$opt/nodejs/node20/node_modules:$opt/nodejs/node_modules:"),
            "{text}"
        );
        assert!(
            text.contains("'/rt/node_modules/aws-lambda-ric/bin/index.mjs'"),
            "{text}"
        );
    }
}

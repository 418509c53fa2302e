//! `wasm-connect new NAME --lang rust|python|js --kind source|sink`: writes a ready connector
//! project into `./NAME/`: the SDK of its language (copied in, so the project builds on its
//! own), a connector that runs as is (a source emits a few records carrying its name; a sink
//! counts, or logs, what it gets), a passing test, a README and an executable `build.sh` that
//! installs the pinned toolchain it needs inside the project and writes `NAME.wasm`.
//!
//! Every file is embedded in the binary: the templates under `scaffold/templates/`, and the
//! SDKs and the WIT from their one home in the repository (`plugins-src/`, `wit/`).

use std::path::{Path, PathBuf};

/// The language of the project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

/// Which world the connector targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProjectKind {
    Source,
    Sink,
}

/// Why a project cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum NewError {
    #[error(
        "invalid project name {0:?}: use lowercase ASCII letters, digits and '-', starting with \
         a letter, at most 64 characters (it becomes the plugin name, the package name and the \
         .wasm file name)"
    )]
    BadName(String),
    #[error("{} already exists: choose another name, or move it away", .0.display())]
    Exists(PathBuf),
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One file of a project: where it goes, its text, and whether it is a program.
struct File {
    path: &'static str,
    text: &'static str,
    executable: bool,
}

const fn file(path: &'static str, text: &'static str) -> File {
    File {
        path,
        text,
        executable: false,
    }
}

const fn program(path: &'static str, text: &'static str) -> File {
    File {
        path,
        text,
        executable: true,
    }
}

const CONNECTOR_WIT: &str = include_str!("../../../wit/connector.wit");
const CONNECTOR_WIT_V0_2_0: &str = include_str!("../../../wit/v0.2.0/connector.wit");
const README: &str = include_str!("templates/README.md");

const RUST: &[File] = &[
    file("Cargo.toml", include_str!("templates/rust/Cargo.toml")),
    program("build.sh", include_str!("templates/rust/build.sh")),
    file(".gitignore", "target/\n*.wasm\n"),
    file("wit/connector.wit", CONNECTOR_WIT),
    // Sinks and transforms build against package 0.2.0 (see the SDK's guest.rs).
    file("wit/v0.2.0/connector.wit", CONNECTOR_WIT_V0_2_0),
    file(
        "vendor/wasm-connect-sdk/Cargo.toml",
        include_str!("templates/rust/sdk-Cargo.toml"),
    ),
    file(
        "vendor/wasm-connect-sdk/src/lib.rs",
        include_str!("../../../plugins-src/sdk/src/lib.rs"),
    ),
    file(
        "vendor/wasm-connect-sdk/src/batch.rs",
        include_str!("../../../plugins-src/sdk/src/batch.rs"),
    ),
    file(
        "vendor/wasm-connect-sdk/src/guest.rs",
        include_str!("../../../plugins-src/sdk/src/guest.rs"),
    ),
    file(
        "vendor/wasm-connect-sdk/src/http.rs",
        include_str!("../../../plugins-src/sdk/src/http.rs"),
    ),
    file(
        "vendor/wasm-connect-sdk/src/json.rs",
        include_str!("../../../plugins-src/sdk/src/json.rs"),
    ),
    file(
        "vendor/wasm-connect-sdk/src/retry.rs",
        include_str!("../../../plugins-src/sdk/src/retry.rs"),
    ),
    file(
        "vendor/wasm-connect-sdk/src/tcp.rs",
        include_str!("../../../plugins-src/sdk/src/tcp.rs"),
    ),
];
const RUST_SOURCE: &[File] = &[file("src/lib.rs", include_str!("templates/rust/source.rs"))];
const RUST_SINK: &[File] = &[file("src/lib.rs", include_str!("templates/rust/sink.rs"))];

const PYTHON: &[File] = &[
    program("build.sh", include_str!("templates/python/build.sh")),
    file(".gitignore", ".venv/\n__pycache__/\n*.wasm\n"),
    file("wit/connector.wit", CONNECTOR_WIT),
    file(
        "wasm_connect/__init__.py",
        include_str!("../../../plugins-src/sdk-python/wasm_connect/__init__.py"),
    ),
    file(
        "wasm_connect/_glue.py",
        include_str!("../../../plugins-src/sdk-python/wasm_connect/_glue.py"),
    ),
];
const PYTHON_SOURCE: &[File] = &[
    file("app.py", include_str!("templates/python/source.py")),
    file(
        "test_app.py",
        include_str!("templates/python/test_source.py"),
    ),
    file(
        "source.py",
        include_str!("../../../plugins-src/sdk-python/source.py"),
    ),
];
const PYTHON_SINK: &[File] = &[
    file("app.py", include_str!("templates/python/sink.py")),
    file("test_app.py", include_str!("templates/python/test_sink.py")),
    file(
        "sink.py",
        include_str!("../../../plugins-src/sdk-python/sink.py"),
    ),
];

const JS: &[File] = &[
    program("build.sh", include_str!("templates/js/build.sh")),
    file("package.json", include_str!("templates/js/package.json")),
    file(".gitignore", "node_modules/\n*.wasm\n"),
    file(
        "sdk/wasm-connect.js",
        include_str!("../../../plugins-src/sdk-js/wasm-connect.js"),
    ),
    program(
        "sdk/build.sh",
        include_str!("../../../plugins-src/sdk-js/build.sh"),
    ),
    file(
        "sdk/package.json",
        include_str!("../../../plugins-src/sdk-js/package.json"),
    ),
    file(
        "sdk/package-lock.json",
        include_str!("../../../plugins-src/sdk-js/package-lock.json"),
    ),
    file(
        "sdk/wit/world.wit",
        include_str!("../../../plugins-src/sdk-js/wit/world.wit"),
    ),
    file("sdk/wit/deps/connector/connector.wit", CONNECTOR_WIT),
    file(
        "sdk/wit/deps/io/io.wit",
        include_str!("../../../plugins-src/sdk-js/wit/deps/io/io.wit"),
    ),
    file(
        "sdk/wit/deps/clocks/clocks.wit",
        include_str!("../../../plugins-src/sdk-js/wit/deps/clocks/clocks.wit"),
    ),
    file(
        "sdk/wit/deps/filesystem/filesystem.wit",
        include_str!("../../../plugins-src/sdk-js/wit/deps/filesystem/filesystem.wit"),
    ),
];
const JS_SOURCE: &[File] = &[
    file("app.js", include_str!("templates/js/source.js")),
    file("app.test.js", include_str!("templates/js/source.test.js")),
];
const JS_SINK: &[File] = &[
    file("app.js", include_str!("templates/js/sink.js")),
    file("app.test.js", include_str!("templates/js/sink.test.js")),
];

/// What the README says about one language.
struct Guide {
    language: &'static str,
    files: &'static str,
    toolchain: &'static str,
    test: &'static str,
}

impl Lang {
    fn files(self, kind: ProjectKind) -> [&'static [File]; 2] {
        match (self, kind) {
            (Lang::Rust, ProjectKind::Source) => [RUST, RUST_SOURCE],
            (Lang::Rust, ProjectKind::Sink) => [RUST, RUST_SINK],
            (Lang::Python, ProjectKind::Source) => [PYTHON, PYTHON_SOURCE],
            (Lang::Python, ProjectKind::Sink) => [PYTHON, PYTHON_SINK],
            (Lang::Js, ProjectKind::Source) => [JS, JS_SOURCE],
            (Lang::Js, ProjectKind::Sink) => [JS, JS_SINK],
        }
    }

    fn guide(self) -> Guide {
        match self {
            Lang::Rust => Guide {
                language: "Rust",
                files: "| `src/lib.rs` | your connector and its test |\n\
                        | `vendor/wasm-connect-sdk/` | the Rust SDK |\n\
                        | `wit/connector.wit` | the contract with the host |\n\
                        | `build.sh` | builds `{{name}}.wasm` |",
                toolchain: "cargo; adds the wasm32-wasip2 target with rustup when missing",
                test: "cargo test",
            },
            Lang::Python => Guide {
                language: "Python",
                files: "| `app.py` | your connector |\n\
                        | `test_app.py` | its test, in plain Python |\n\
                        | `wasm_connect/` | the Python SDK |\n\
                        | `{{kind}}.py` | SDK glue componentize-py looks for (leave it) |\n\
                        | `wit/connector.wit` | the contract with the host |\n\
                        | `build.sh` | builds `{{name}}.wasm` |",
                toolchain: "componentize-py 0.25.1, installed into .venv/ when missing",
                test: "python3 -m unittest",
            },
            Lang::Js => Guide {
                language: "JavaScript",
                files: "| `app.js` | your connector |\n\
                        | `app.test.js` | its test, under Node |\n\
                        | `sdk/` | the JS SDK, its WIT and its pinned build tool |\n\
                        | `build.sh` | builds `{{name}}.wasm` |",
                toolchain: "componentize-qjs 0.4.5, installed into sdk/node_modules/ when missing",
                test: "npm test",
            },
        }
    }
}

impl ProjectKind {
    fn as_str(self) -> &'static str {
        match self {
            ProjectKind::Source => "source",
            ProjectKind::Sink => "sink",
        }
    }
}

/// Checks a project name: it is the plugin name, a Cargo/npm package name and a file name.
fn check_name(name: &str) -> Result<(), NewError> {
    let mut chars = name.chars();
    let ok = name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(NewError::BadName(name.to_string()))
    }
}

/// Writes the project `name` into `parent/name/` and returns that directory.
pub fn create(
    parent: &Path,
    name: &str,
    lang: Lang,
    kind: ProjectKind,
) -> Result<PathBuf, NewError> {
    check_name(name)?;
    let dir = parent.join(name);
    if dir.exists() {
        return Err(NewError::Exists(dir));
    }
    let guide = lang.guide();
    let (topic_key, behaviour) = match kind {
        ProjectKind::Source => (
            "topic",
            "The source emits five records, `record 0 from {{name}}` … `record 4 from {{name}}`, \
             into the topic, commits its count as its position and resumes from it after a \
             restart.",
        ),
        ProjectKind::Sink => (
            "topics",
            "The sink consumes the topics, logs each record (the Rust sink only counts them) and \
             commits the count as its position.",
        ),
    };
    let fill = |text: &str| {
        text.replace("{{files}}", guide.files)
            .replace("{{behaviour}}", behaviour)
            .replace("{{language}}", guide.language)
            .replace("{{toolchain}}", guide.toolchain)
            .replace("{{test}}", guide.test)
            .replace("{{topic_key}}", topic_key)
            .replace("{{kind}}", kind.as_str())
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{name}}", name)
    };
    let readme = File {
        path: "README.md",
        text: README,
        executable: false,
    };
    for file in lang.files(kind).into_iter().flatten().chain([&readme]) {
        write(&dir.join(file.path), &fill(file.text), file.executable)?;
    }
    Ok(dir)
}

fn write(path: &Path, text: &str, executable: bool) -> Result<(), NewError> {
    let failed = |source| NewError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    std::fs::write(path, text).map_err(failed)?;
    if executable {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(failed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_package_names_are_refused() {
        for bad in [
            "",
            "Upper",
            "1st",
            "a_b",
            "a/b",
            "../x",
            "a b",
            &"x".repeat(65),
        ] {
            assert!(
                matches!(check_name(bad), Err(NewError::BadName(_))),
                "{bad:?}"
            );
        }
        check_name("my-source-2").unwrap();
    }

    #[test]
    fn an_existing_directory_is_never_overwritten() {
        let parent = tempfile::tempdir().unwrap();
        std::fs::create_dir(parent.path().join("taken")).unwrap();
        let err = create(parent.path(), "taken", Lang::Js, ProjectKind::Source).unwrap_err();
        assert!(matches!(err, NewError::Exists(_)), "{err}");
    }

    #[test]
    fn every_placeholder_is_filled() {
        let parent = tempfile::tempdir().unwrap();
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            for kind in [ProjectKind::Source, ProjectKind::Sink] {
                let name = format!("p-{lang:?}-{}", kind.as_str()).to_lowercase();
                let dir = create(parent.path(), &name, lang, kind).unwrap();
                for file in lang.files(kind).into_iter().flatten() {
                    let text = std::fs::read_to_string(dir.join(file.path)).unwrap();
                    assert!(
                        !text.contains("{{"),
                        "{name}/{} keeps a placeholder",
                        file.path
                    );
                }
                let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
                assert!(
                    !readme.contains("{{"),
                    "{name}/README.md keeps a placeholder"
                );
            }
        }
    }

    /// The Rust project vendors the SDK: every file of `plugins-src/sdk/src` and every
    /// feature of its Cargo.toml must be there, or a generated project stops building when
    /// the SDK grows a module.
    #[test]
    fn the_vendored_rust_sdk_is_the_whole_sdk() {
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins-src/sdk");
        for entry in std::fs::read_dir(sdk.join("src")).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let vendored = format!("vendor/wasm-connect-sdk/src/{name}");
            assert!(
                RUST.iter().any(|f| f.path == vendored),
                "{vendored} is missing from scaffold::RUST"
            );
        }
        let features = |text: &str| -> Vec<String> {
            text.split("[features]")
                .nth(1)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains('=') && !l.trim_start().starts_with('#'))
                .map(|l| l.trim().to_string())
                .collect()
        };
        let ours = std::fs::read_to_string(sdk.join("Cargo.toml")).unwrap();
        assert_eq!(
            features(include_str!("templates/rust/sdk-Cargo.toml")),
            features(&ours),
            "templates/rust/sdk-Cargo.toml has other features than plugins-src/sdk/Cargo.toml"
        );
    }
}

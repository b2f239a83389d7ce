//! Language defaults (docs/semantics.md §8): what `install` and `script` run when
//! the config leaves them out.
//!
//! Decisions read the checkout through a `has(file)` predicate, so they are tested
//! without a disk.

use std::path::Path;

/// The default commands of one phase, or a message when the language has none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Default {
    /// Run these commands.
    Commands(Vec<String>),
    /// Nothing to run.
    Nothing,
    /// Print this and fail the phase (Travis's python has no default script).
    Fail(String),
}

/// The default `install` of a language; `npm_args` (node_js) goes after `npm ci` or
/// `npm install`, as travis-build did.
pub fn install(language: &str, has: &dyn Fn(&str) -> bool, npm_args: Option<&str>) -> Default {
    let one = |c: &str| Default::Commands(vec![c.to_string()]);
    match language {
        "java" | "android" | "groovy" | "kotlin" | "clojure" | "scala" => {
            if has("gradlew") {
                one("travis_retry ./gradlew assemble")
            } else if has("build.gradle") || has("build.gradle.kts") {
                one("travis_retry gradle assemble")
            } else if has("mvnw") {
                one("travis_retry ./mvnw install -DskipTests=true -Dmaven.javadoc.skip=true -B -V")
            } else if has("pom.xml") {
                one("travis_retry mvn install -DskipTests=true -Dmaven.javadoc.skip=true -B -V")
            } else {
                Default::Nothing
            }
        }
        "node_js" => {
            let args = npm_args
                .map(|a| format!(" {}", a.trim()))
                .filter(|a| a.len() > 1)
                .unwrap_or_default();
            if has("yarn.lock") {
                one("travis_retry yarn --frozen-lockfile")
            } else if has("package-lock.json") || has("npm-shrinkwrap.json") {
                one(&format!("travis_retry npm ci{args}"))
            } else if has("package.json") {
                one(&format!("travis_retry npm install{args}"))
            } else {
                Default::Nothing
            }
        }
        // travis-build lib/travis/build/script/python.rb `install`: `Requirements.txt`
        // first, then `requirements.txt`.
        "python" => {
            if has("Requirements.txt") {
                one("travis_retry pip install -r Requirements.txt")
            } else if has("requirements.txt") {
                one("travis_retry pip install -r requirements.txt")
            } else {
                Default::Commands(vec![
                    "echo 'Could not locate requirements.txt. Override the install: key in your .travis.yml to install dependencies.'".into(),
                ])
            }
        }
        "ruby" => {
            if has("Gemfile") {
                one("travis_retry bundle install --jobs=3 --retry=3")
            } else {
                Default::Nothing
            }
        }
        "go" => {
            if has("go.mod") {
                one("travis_retry go mod download")
            } else {
                one("travis_retry go get -t -v ./...")
            }
        }
        _ => Default::Nothing,
    }
}

/// The default `script` of a language.
pub fn script(language: &str, has: &dyn Fn(&str) -> bool) -> Default {
    let one = |c: &str| Default::Commands(vec![c.to_string()]);
    match language {
        "java" | "android" | "groovy" | "kotlin" | "clojure" | "scala" => {
            if has("gradlew") {
                one("./gradlew check")
            } else if has("build.gradle") || has("build.gradle.kts") {
                one("gradle check")
            } else if has("mvnw") {
                one("./mvnw test -B")
            } else if has("pom.xml") {
                one("mvn test -B")
            } else {
                one("ant test")
            }
        }
        "node_js" => {
            if has("yarn.lock") {
                one("yarn test")
            } else {
                one("npm test")
            }
        }
        "python" => Default::Fail(
            "Please override the script: key in your .travis.yml to run tests.".into(),
        ),
        "ruby" => {
            if has("Gemfile") {
                one("bundle exec rake")
            } else {
                one("rake")
            }
        }
        "rust" => Default::Commands(vec![
            "cargo build --verbose".into(),
            "cargo test --verbose".into(),
        ]),
        "go" => {
            if has("Makefile") {
                one("make")
            } else {
                one("go test -v ./...")
            }
        }
        "c" | "cpp" => one("./configure && make && make test"),
        _ => Default::Nothing,
    }
}

/// Languages whose defaults runway knows; others get a warning when they rely on defaults.
pub fn known(language: &str) -> bool {
    matches!(
        language,
        "java"
            | "android"
            | "groovy"
            | "clojure"
            | "scala"
            | "node_js"
            | "python"
            | "ruby"
            | "rust"
            | "go"
            | "c"
            | "cpp"
            | "generic"
            | "minimal"
            | "shell"
    )
}

/// True when `dir` has `file`.
pub fn has_in(dir: &Path) -> impl Fn(&str) -> bool + '_ {
    move |f: &str| dir.join(f).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(files: &'static [&'static str]) -> impl Fn(&str) -> bool {
        move |f: &str| files.contains(&f)
    }

    /// issue 16: travis-build's python.rb installs `Requirements.txt` first.
    #[test]
    fn python_installs_requirements_txt_in_either_spelling() {
        let cmd = |c: &str| Default::Commands(vec![c.to_string()]);
        assert_eq!(
            install("python", &with(&["Requirements.txt"]), None),
            cmd("travis_retry pip install -r Requirements.txt")
        );
        assert_eq!(
            install(
                "python",
                &with(&["Requirements.txt", "requirements.txt"]),
                None
            ),
            cmd("travis_retry pip install -r Requirements.txt")
        );
        assert_eq!(
            install("python", &with(&["requirements.txt"]), None),
            cmd("travis_retry pip install -r requirements.txt")
        );
    }

    #[test]
    fn s8_java_defaults_first_match() {
        let gw = with(&["gradlew", "build.gradle", "pom.xml"]);
        assert_eq!(
            install("java", &gw, None),
            Default::Commands(vec!["travis_retry ./gradlew assemble".into()])
        );
        assert_eq!(
            script("java", &gw),
            Default::Commands(vec!["./gradlew check".into()])
        );
        let mvn = with(&["pom.xml"]);
        assert_eq!(
            install("java", &mvn, None),
            Default::Commands(vec![
                "travis_retry mvn install -DskipTests=true -Dmaven.javadoc.skip=true -B -V".into()
            ])
        );
        assert_eq!(
            script("java", &mvn),
            Default::Commands(vec!["mvn test -B".into()])
        );
        assert_eq!(
            script("java", &with(&["mvnw", "pom.xml"])),
            Default::Commands(vec!["./mvnw test -B".into()])
        );
        assert_eq!(
            script("java", &with(&["build.gradle"])),
            Default::Commands(vec!["gradle check".into()])
        );
        assert_eq!(install("java", &with(&[]), None), Default::Nothing);
    }

    #[test]
    fn s8_other_languages() {
        let none = with(&[]);
        assert!(matches!(script("python", &none), Default::Fail(_)));
        assert_eq!(
            script("rust", &none),
            Default::Commands(vec![
                "cargo build --verbose".into(),
                "cargo test --verbose".into()
            ])
        );
        assert_eq!(
            install("node_js", &with(&["package-lock.json"]), None),
            Default::Commands(vec!["travis_retry npm ci".into()])
        );
        assert_eq!(
            install("node_js", &with(&["package.json"]), Some("--no-optional")),
            Default::Commands(vec!["travis_retry npm install --no-optional".into()])
        );
        assert_eq!(
            install("node_js", &with(&["yarn.lock", "package.json"]), Some("-q")),
            Default::Commands(vec!["travis_retry yarn --frozen-lockfile".into()])
        );
        assert_eq!(
            script("node_js", &none),
            Default::Commands(vec!["npm test".into()])
        );
        assert_eq!(script("shell", &none), Default::Nothing);
        assert_eq!(
            script("c", &none),
            Default::Commands(vec!["./configure && make && make test".into()])
        );
    }
}

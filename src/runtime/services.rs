//! `addons.apt` and `services:`: packages installed and services started inside the
//! job's sandbox, before `before_install`, as Travis's setup did (`apt-get install`,
//! `sudo service X start`). They change only the job's copy of the machine, and the
//! services end with its PID namespace. A service that is not installed errors the job
//! with the command that installs it. Pure: this decides the commands the job's shell
//! runs.

use crate::process::quote;

/// One setup command: what the log shows, and why the job is errored if it fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetupCommand {
    /// The shell command.
    pub command: String,
    /// The job's reason when it fails.
    pub fails_as: String,
}

pub use crate::config::views::AptSource as Source;

/// The commands that add the `deb` line sources (`runway_apt_source` in the job shell's
/// helpers: its key from `key_url`, the line in `/etc/apt/sources.list.d`, then
/// `apt-get update`); aliases are left to the caller.
pub fn source_commands(sources: &[Source]) -> Vec<SetupCommand> {
    sources
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s {
            Source::Alias(_) => None,
            Source::Line { line, key_url } => Some(SetupCommand {
                command: format!(
                    "runway_apt_source {} {} {}",
                    i + 1,
                    quote(line),
                    quote(key_url.as_deref().unwrap_or(""))
                ),
                fails_as: format!("addons.apt.sources: adding \"{line}\" failed"),
            }),
        })
        .collect()
}

/// The command that installs `packages` (`runway_apt_install`, in the job shell's
/// helpers: refreshes the package lists once when the first try does not find them).
pub fn apt_command(packages: &[String]) -> SetupCommand {
    let names: Vec<String> = packages.iter().map(|p| quote(p)).collect();
    SetupCommand {
        command: format!("runway_apt_install {}", names.join(" ")),
        fails_as: format!("addons.apt: installing {} failed", packages.join(", ")),
    }
}

/// The init scripts that provide a Travis service name, and the Debian package to name
/// when none is installed.
fn service_names(name: &str) -> (Vec<&str>, &str) {
    match name {
        "postgresql" | "postgres" => (vec!["postgresql"], "postgresql"),
        "mysql" => (vec!["mysql", "mariadb"], "mariadb-server"),
        "mariadb" => (vec!["mariadb", "mysql"], "mariadb-server"),
        "redis" | "redis-server" => (vec!["redis-server", "redis"], "redis-server"),
        "memcached" => (vec!["memcached"], "memcached"),
        "mongodb" | "mongod" => (vec!["mongod", "mongodb"], "mongodb-server"),
        "rabbitmq" | "rabbitmq-server" => (vec!["rabbitmq-server"], "rabbitmq-server"),
        "elasticsearch" => (vec!["elasticsearch"], "elasticsearch"),
        "cassandra" => (vec!["cassandra"], "cassandra"),
        "couchdb" => (vec!["couchdb"], "couchdb"),
        "neo4j" => (vec!["neo4j"], "neo4j"),
        "riak" => (vec!["riak"], "riak"),
        other => (vec![other], other),
    }
}

/// The command that starts service `name` as Travis's `sudo service NAME start` did.
pub fn service_command(name: &str) -> SetupCommand {
    match name {
        "xvfb" => SetupCommand {
            command: "if command -v Xvfb >/dev/null; then (Xvfb :99 -screen 0 1024x768x24 >/dev/null 2>&1 &); export DISPLAY=:99.0; else echo 'runway: service xvfb is not installed here: apt-get install xvfb (or addons.apt.packages: [xvfb])'; false; fi".into(),
            fails_as: "service xvfb is not installed here".into(),
        },
        "docker" => SetupCommand {
            command: "echo 'runway: service docker cannot run inside a job sandbox (it needs mounts and namespaces of its own)'; false".into(),
            fails_as: "service docker is not provided inside runway's sandbox".into(),
        },
        _ => {
            let (scripts, package) = service_names(name);
            let scripts: Vec<String> = scripts.iter().map(|s| quote(s)).collect();
            SetupCommand {
                command: format!(
                    "runway_service_start {} {} {}",
                    quote(name),
                    quote(package),
                    scripts.join(" ")
                ),
                fails_as: format!(
                    "service {name} is not installed here or did not start (apt-get install {package})"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(yml: &str) -> crate::config::Config {
        crate::config::load(yml).config
    }

    #[test]
    fn apt_addons_are_read_in_each_spelling() {
        let c = root(
            "addons:\n  apt:\n    packages: [hello, cowsay]\n    sources: [ubuntu-toolchain-r-test]\n",
        );
        let a = crate::config::views::JobKeys(&c.root).apt();
        assert_eq!(a.packages, ["hello", "cowsay"]);
        assert_eq!(a.sources, [Source::Alias("ubuntu-toolchain-r-test".into())]);
        let c = root(
            "addons:\n  apt:\n    sources:\n      - sourceline: deb http://x/ ./\n        key_url: http://x/key\n      - deb [trusted=yes] http://y/ ./\n",
        );
        let a = crate::config::views::JobKeys(&c.root).apt();
        assert_eq!(
            a.sources,
            [
                Source::Line {
                    line: "deb http://x/ ./".into(),
                    key_url: Some("http://x/key".into())
                },
                Source::Line {
                    line: "deb [trusted=yes] http://y/ ./".into(),
                    key_url: None
                }
            ]
        );
        assert_eq!(
            source_commands(&a.sources)[0].command,
            "runway_apt_source 1 'deb http://x/ ./' 'http://x/key'"
        );
        let c = root("addons:\n  apt:\n    packages: hello\n");
        assert_eq!(
            crate::config::views::JobKeys(&c.root).apt().packages,
            ["hello"]
        );
        let cmd = apt_command(&["hello".into(), "a b".into()]);
        assert_eq!(cmd.command, "runway_apt_install 'hello' 'a b'");
    }

    #[test]
    fn services_start_by_their_debian_names_and_say_the_package_when_missing() {
        let redis = service_command("redis");
        assert_eq!(
            redis.command,
            "runway_service_start 'redis' 'redis-server' 'redis-server' 'redis'"
        );
        assert!(redis.fails_as.contains("apt-get install redis-server"));
        assert!(service_command("xvfb").command.contains("DISPLAY=:99.0"));
        assert!(service_command("docker").fails_as.contains("not provided"));
    }
}

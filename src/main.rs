//! The `runway` command line: everything is in [`runway::cmd::cli`].

fn main() -> std::process::ExitCode {
    runway::cmd::cli::main()
}

//! The `sitelog` binary. The command-line code lives in the library (`src/cli/`, the `cli`
//! feature) so that it can use the crate's internal modules directly, without making them
//! part of the public API; this file only calls it.

fn main() -> std::process::ExitCode {
    sitelog::cli::main()
}

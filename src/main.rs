//! The `sitelog` binary. The command-line code lives in `src/cli/` and is compiled only into
//! this binary (feature `cli`), never into the library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}

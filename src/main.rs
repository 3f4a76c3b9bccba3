//! The `roost` command: the built-in app behind Roost's command line
//! ([`roost::cli`], where every subcommand lives). A binary with its own
//! classes is this same line with its own [`roost::cli::App`].

fn main() -> std::process::ExitCode {
    roost::cli::main(roost::cli::BuiltIn)
}

//! The `roost` command: the built-in app behind Roost's command line
//! ([`roost::cli`], where every subcommand lives). A binary with its own
//! classes is this same line with its own [`roost::cli::App`].

/// mimalloc rather than glibc's allocator: see BENCHMARKS.md for what it
/// changed. A library leaves the choice to the binary, so this lives here.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    roost::cli::main(roost::cli::BuiltIn)
}

//! The `tailgate` binary: the command line is [`tailgate::cli`].

use std::process::ExitCode;

/// mimalloc: per-thread free lists instead of glibc's contended arenas, which
/// took a quarter of the end-to-end profile (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tailgate::cli::main()
}

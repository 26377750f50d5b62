#![forbid(unsafe_code)]

/// mimalloc rather than glibc's malloc: the writer thread frees what the RPC threads
/// allocated (each job's closure, its rows and parameters), and glibc's per-thread arenas
/// made that about a tenth of the writer's time (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    jisr::cli::main()
}

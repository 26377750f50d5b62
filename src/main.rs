#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    jisr::cli::main()
}

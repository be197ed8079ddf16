//! Thin entry point: everything lives in the library so tests can drive it in-process.
fn main() -> std::process::ExitCode {
    cce_cni_guard::cli::main()
}

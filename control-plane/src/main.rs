//! The `livegate-control-plane` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    livegate_control_plane::cli::main()
}

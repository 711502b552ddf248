//! The `kube-gw` binary: see the library's `cli` module.

fn main() -> std::process::ExitCode {
    kube_gw::cli::main()
}

fn main() -> std::process::ExitCode {
    qntx_python_plugin::cli::main()
}

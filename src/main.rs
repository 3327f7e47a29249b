fn main() -> std::process::ExitCode {
    // A re-executed sandbox init (or probe) must run before anything else starts threads.
    if let Some(code) = kiln::sandbox::init::enter_if_requested() {
        return code;
    }
    kiln::cli::main()
}

fn main() {
    std::process::exit(spoolsift::cli::run());
}

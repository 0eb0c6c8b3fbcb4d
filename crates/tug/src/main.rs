//! The `tug` binary: parses the command line, then starts the components.
//!
//! Each component is a library with a `run(config, shutdown)` entry point;
//! this crate only turns flags into validated configs and wires the
//! components together. Start reading at [`cli::Command`].

mod agent;
mod cli;
mod images;
mod leader;
mod server;
mod sim;

use clap::Parser;

/// The API server allocates and frees many small JSON nodes per request;
/// mimalloc serves them faster than glibc's malloc (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("tug: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            cli::Command::Server(args) => server::run(server::Config::try_from(*args)?).await,
            cli::Command::Agent(args) => agent::run(*args).await,
            cli::Command::SimNodes(args) => sim::run(args).await,
            cli::Command::Images(args) => images::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tug: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

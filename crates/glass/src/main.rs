//! The `glass` binary: parse the command line, run the command, exit.

mod cli;
mod client;
mod commands;
mod config;
mod node;
mod node_dns;
mod node_gateway;
mod routes_cmd;
mod table;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

/// mimalloc: the proxy and DNS paths allocate small, short-lived buffers
/// on every request, where glibc's allocator showed up at ~8 % of the
/// gateway's CPU (and returned pages to the kernel only to fault them in
/// again).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Serve(args) => args.worker_threads,
        _ => None,
    };
    // One worker: the single-threaded scheduler, which skips the work
    // stealing machinery a lone worker never uses.
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.max(1));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("glass: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::CheckConfig(args) => {
                let config = config::Config::load(&args)?;
                println!("{}: ok", config.source_name());
                Ok(())
            }
            Command::Openapi => {
                println!("{}", glass_api::openapi_json());
                Ok(())
            }
            other => commands::run(other).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One readable line: the error and its causes.
            let text = format!("{err:#}");
            eprintln!("glass: {}", text.replace('\n', " "));
            let usage = err.downcast_ref::<config::ConfigError>().is_some();
            ExitCode::from(if usage { 64 } else { 1 })
        }
    }
}

async fn serve(args: cli::ServeArgs) -> anyhow::Result<()> {
    let config = config::Config::load(&args)?;
    init_logging(&config);
    node::run(config, shutdown_signal()).await
}

fn init_logging(config: &config::Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GLASS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler works on unix");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

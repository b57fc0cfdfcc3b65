//! kvmux: a software KVM switch over RFB (VNC).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod benchproxy;
mod serve;
mod snapshot;
mod testsrc;

#[derive(Parser, Debug)]
#[command(
    name = "kvmux",
    version,
    about = "A software KVM switch over RFB (VNC)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Connect to a VNC server, take one full frame and write it as a PNG.
    Snapshot(snapshot::SnapshotArgs),
    /// Run a built-in test machine: an RFB server showing a generated picture that
    /// logs the keyboard and pointer input it receives.
    Testsrc(testsrc::TestsrcArgs),
    /// Run the proxy: many machines behind one VNC endpoint, switched by hotkey.
    Serve(serve::ServeArgs),
    /// Run the proxy with three built-in test machines, no config needed.
    Demo(serve::DemoArgs),
    /// Measure how fast a VNC server delivers full-frame or incremental updates.
    #[command(hide = true)]
    BenchPull(bench::BenchPullArgs),
    /// Measure what the proxy adds: latency, switch time, CPU, memory under load.
    #[command(hide = true)]
    BenchProxy(benchproxy::BenchProxyArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("KVMUX_LOG").unwrap_or_else(|_| {
        // The proxy's default is to say what it does; one-shot commands stay quiet.
        let level = match cli.command {
            Command::Serve(_) | Command::Demo(_) => "info",
            _ => "warn",
        };
        tracing_subscriber::EnvFilter::new(level)
    });
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours for a terminal only, not for log files and collectors.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // KVMUX_LOG_FORMAT=json: one JSON object per line, for log collectors.
    if std::env::var("KVMUX_LOG_FORMAT").is_ok_and(|f| f == "json") {
        logs.json().init();
    } else {
        logs.init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Encoding runs in `block_in_place`, which hands the worker's other tasks to a
        // thread from the blocking pool. A small pool keeps the thread count (and
        // the allocator's per-thread arenas) bounded under many clients.
        .max_blocking_threads(4)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kvmux: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Snapshot(args) => snapshot::run(args).await,
            Command::Testsrc(args) => testsrc::run(args).await,
            Command::BenchPull(args) => bench::run(args).await,
            Command::BenchProxy(args) => benchproxy::run(args).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Demo(args) => serve::run_demo(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kvmux: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, leaving out a cause whose text the line
/// already holds (many errors repeat their source in their own message).
pub fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

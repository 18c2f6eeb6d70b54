use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use livegate::config::Config;

/// livegate: RTMP in; HLS, HTTP-FLV and RTMP play out.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file (see config/livegate.toml). Flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// RTMP listen address [default: 0.0.0.0:1935]
    #[arg(long, value_name = "ADDR")]
    rtmp_listen: Option<SocketAddr>,
    /// HTTP listen address [default: 0.0.0.0:8080]
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<SocketAddr>,
    /// Also write HLS playlists and segments under DIR
    #[arg(long, value_name = "DIR")]
    hls_dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    fixed_mmap_threshold();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if let Some((before, now)) = livegate::net::listener::raise_nofile_limit() {
        if now > before {
            tracing::info!("open-file limit raised from {before} to {now} (the hard limit)");
        }
    }
    let config = load(&args)?;
    let reload = Box::new(move || load(&args));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(livegate::app::run(config, reload))
}

/// The configuration file (or the built-in defaults) with the flags applied over it.
fn load(args: &Args) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(a) = args.rtmp_listen {
        config.rtmp.listen = a;
    }
    if let Some(a) = args.http_listen {
        config.http.listen = a;
    }
    if let Some(d) = &args.hls_dir {
        config.hls.dir = Some(d.clone());
    }
    config.validate()?;
    Ok(config)
}

/// glibc serves allocations of 128 KiB and more with their own mmap, but raises that
/// threshold to the largest block freed so far (up to 32 MiB): after the first large frame is
/// freed, later large frames come from the heap arenas, one per thread, whose peaks add up
/// and are never given back. Media payloads are large and short-lived, so livegate fixes the
/// threshold: a freed frame, segment or message buffer returns to the system at once, and the
/// process's memory follows what it holds (measured with 400 MiB of frozen-timestamp frames:
/// peak RSS +128 MiB instead of +186 MiB, within the configured bounds).
fn fixed_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; called before any thread exists.
        let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) };
        if ok != 1 {
            eprintln!("livegate: could not fix the malloc mmap threshold; memory may stay high after spikes");
        }
    }
}

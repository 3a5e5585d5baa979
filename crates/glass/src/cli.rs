//! The command line: subcommands, flags and their `GLASS_*` environment variables.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Glass: service registry, API gateway and runtime in one binary.
#[derive(Debug, Parser)]
#[command(name = "glass", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a Glass node (embedded store, control API, DNS, health checks).
    Serve(ServeArgs),
    /// Validate the configuration and exit.
    CheckConfig(ServeArgs),
    /// Register an instance (idempotent).
    Register(Box<RegisterArgs>),
    /// Deregister an instance.
    Deregister(InstanceArgs),
    /// Send a heartbeat for a TTL-checked instance.
    Heartbeat(InstanceArgs),
    /// List instances.
    Instances(InstancesArgs),
    /// List service addresses with healthy/total counts.
    Services(ListArgs),
    /// Stream catalog changes.
    Watch(WatchArgs),
    /// Print the control API's OpenAPI document.
    Openapi,
    /// Apply a routes file (TOML or JSON) declaratively; prints what changed.
    Apply(ApplyArgs),
    /// List the gateway's routes.
    Routes(ListArgs),
}

/// Options of `glass serve`; every one is also a `GLASS_*` variable and a
/// key of the config file. Flags win over variables, variables over the file.
#[derive(Debug, Args, Default, Clone)]
pub(crate) struct ServeArgs {
    /// Config file (TOML). Default: ./glass.toml when it exists.
    #[arg(long, env = "GLASS_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Data directory (store, token, addrs.json). Default: ./glass-data
    #[arg(long, env = "GLASS_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Control API address (/api/v1, /metrics). Default: 127.0.0.1:8500
    #[arg(long, env = "GLASS_API_ADDR")]
    pub(crate) api_addr: Option<String>,
    /// Gateway address (HTTP/1.1 and h2c). Default: 0.0.0.0:8080
    #[arg(long, env = "GLASS_GATEWAY_ADDR")]
    pub(crate) gateway_addr: Option<String>,
    /// Gateway TLS address (needs --tls-dir). Default: none
    #[arg(long, env = "GLASS_GATEWAY_TLS_ADDR")]
    pub(crate) gateway_tls_addr: Option<String>,
    /// Directory of <name>.crt + <name>.key pairs for the TLS listener (SNI by name).
    #[arg(long, env = "GLASS_TLS_DIR")]
    pub(crate) tls_dir: Option<PathBuf>,
    /// Gateway access log: a file, "-" for stdout, or "off". Default: -
    #[arg(long, env = "GLASS_ACCESS_LOG")]
    pub(crate) access_log: Option<String>,
    /// DNS address, UDP and TCP. Default: 127.0.0.1:8600
    #[arg(long, env = "GLASS_DNS_ADDR")]
    pub(crate) dns_addr: Option<String>,
    /// DNS domain Glass answers for. Default: glass.
    #[arg(long, env = "GLASS_DNS_DOMAIN")]
    pub(crate) dns_domain: Option<String>,
    /// Zone of this node. Default: local
    #[arg(long, env = "GLASS_ZONE")]
    pub(crate) zone: Option<String>,
    /// Name of this node (a DNS label). Default: derived from the host name
    #[arg(long, env = "GLASS_NODE_NAME")]
    pub(crate) node_name: Option<String>,
    /// Directory of provider files (host-local registration). Default: none
    #[arg(long, env = "GLASS_PROVIDERS_DIR")]
    pub(crate) providers_dir: Option<PathBuf>,
    /// Development mode: mutations need no token.
    #[arg(long, env = "GLASS_DEV")]
    pub(crate) dev: bool,
    /// Log level filter (e.g. info, debug, glass_catalog=debug). Default: info
    #[arg(long, env = "GLASS_LOG_LEVEL")]
    pub(crate) log_level: Option<String>,
    /// Log as JSON lines.
    #[arg(long, env = "GLASS_LOG_JSON")]
    pub(crate) log_json: bool,
    /// Async worker threads. Default: one per CPU the process may use.
    #[arg(long, env = "GLASS_WORKER_THREADS")]
    pub(crate) worker_threads: Option<usize>,
}

/// How the CLI reaches a node.
#[derive(Debug, Args, Clone)]
pub(crate) struct ClientArgs {
    /// Control API address or URL. Default: from <data-dir>/addrs.json, else 127.0.0.1:8500
    #[arg(long, env = "GLASS_API_ADDR", global = true)]
    pub(crate) api_addr: Option<String>,
    /// Bearer token. Default: <data-dir>/token
    #[arg(long, env = "GLASS_TOKEN", global = true, hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Data directory of a local node (for addrs.json and token).
    #[arg(
        long,
        env = "GLASS_DATA_DIR",
        global = true,
        default_value = "glass-data"
    )]
    pub(crate) data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct RegisterArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// A JSON registration file ("-" for stdin) instead of the flags below.
    #[arg(long, short = 'f', conflicts_with_all = ["product", "env", "job", "address"])]
    pub(crate) file: Option<PathBuf>,
    /// Instance id (generated when left out).
    #[arg(long)]
    pub(crate) id: Option<String>,
    #[arg(long, required_unless_present = "file")]
    pub(crate) product: Option<String>,
    #[arg(long, required_unless_present = "file")]
    pub(crate) env: Option<String>,
    #[arg(long, required_unless_present = "file")]
    pub(crate) job: Option<String>,
    /// Zone (default: the node's).
    #[arg(long)]
    pub(crate) zone: Option<String>,
    /// IPv4 or IPv6 address.
    #[arg(long, required_unless_present = "file")]
    pub(crate) address: Option<String>,
    /// A named port, NAME=PORT (repeatable), e.g. --port http=8080
    #[arg(long = "port", value_name = "NAME=PORT")]
    pub(crate) ports: Vec<String>,
    /// Version of the running code.
    #[arg(long)]
    pub(crate) version: Option<String>,
    /// A tag (repeatable).
    #[arg(long = "tag")]
    pub(crate) tags: Vec<String>,
    /// Metadata KEY=VALUE (repeatable).
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub(crate) meta: Vec<String>,
    /// HTTP health check path, e.g. /healthz
    #[arg(long)]
    pub(crate) check_http: Option<String>,
    /// TCP connect health check.
    #[arg(long)]
    pub(crate) check_tcp: bool,
    /// TTL health check, e.g. 10s (send heartbeats with `glass heartbeat`).
    #[arg(long)]
    pub(crate) check_ttl: Option<String>,
    /// gRPC health check of this service ("" for the whole server).
    #[arg(long)]
    pub(crate) check_grpc: Option<String>,
    /// Port the check probes (NAME).
    #[arg(long)]
    pub(crate) check_port: Option<String>,
    /// Check interval, e.g. 5s.
    #[arg(long)]
    pub(crate) check_interval: Option<String>,
    /// Check timeout, e.g. 1s.
    #[arg(long)]
    pub(crate) check_timeout: Option<String>,
    /// Deregister after being critical this long, e.g. 1m.
    #[arg(long)]
    pub(crate) deregister_critical_after: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct InstanceArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// Instance id.
    pub(crate) id: String,
    /// Product, env and job: needed only when the id exists in several jobs.
    #[arg(long, requires_all = ["env", "job"])]
    pub(crate) product: Option<String>,
    #[arg(long, requires_all = ["product", "job"])]
    pub(crate) env: Option<String>,
    #[arg(long, requires_all = ["product", "env"])]
    pub(crate) job: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct InstancesArgs {
    #[command(flatten)]
    pub(crate) list: ListArgs,
    #[arg(long)]
    pub(crate) product: Option<String>,
    #[arg(long)]
    pub(crate) env: Option<String>,
    #[arg(long)]
    pub(crate) job: Option<String>,
    #[arg(long)]
    pub(crate) zone: Option<String>,
    /// Only instances with a port of this name.
    #[arg(long)]
    pub(crate) port: Option<String>,
    #[arg(long)]
    pub(crate) tag: Option<String>,
    /// Only passing instances.
    #[arg(long)]
    pub(crate) healthy: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ApplyArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// The routes file: `[[routes]]` tables (TOML) or {"routes": [...]} (JSON).
    #[arg(long, short = 'f')]
    pub(crate) file: PathBuf,
    /// Show what would change without changing anything.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Also delete routes that are not in the file.
    #[arg(long)]
    pub(crate) prune: bool,
}

#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    #[command(flatten)]
    pub(crate) list: ListArgs,
    /// First revision to show (default: only new changes).
    #[arg(long, default_value_t = 0)]
    pub(crate) from: i64,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}

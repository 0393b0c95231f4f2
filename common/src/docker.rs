//! Connecting to a Docker engine named by a `docker.host` setting (both binaries).

use bollard::Docker;

use crate::config::ConfigError;

/// Checks a `docker.host` value; `key` names it in the error.
pub fn check_host(key: &str, host: &str) -> Result<(), ConfigError> {
    if ["unix://", "tcp://", "http://"]
        .iter()
        .any(|p| host.starts_with(p))
    {
        Ok(())
    } else {
        Err(ConfigError::new(
            key,
            "must start with unix:// (a socket path) or tcp:// (host:port)",
        ))
    }
}

/// A client for the engine at `host` (no request is made yet); `timeout` bounds each request.
pub fn connect(host: &str, timeout: std::time::Duration) -> Result<Docker, bollard::errors::Error> {
    let timeout = timeout.as_secs().max(1);
    if host.starts_with("unix://") {
        Docker::connect_with_unix(host, timeout, bollard::API_DEFAULT_VERSION)
    } else {
        Docker::connect_with_http(host, timeout, bollard::API_DEFAULT_VERSION)
    }
}

/// The socket path of a `unix://` host.
pub fn socket_path(host: &str) -> Option<&std::path::Path> {
    host.strip_prefix("unix://").map(std::path::Path::new)
}

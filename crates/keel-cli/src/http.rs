//! A minimal HTTP/1.1 GET for a Keel node's HTTP port (`/health`): one request per
//! connection, `Connection: close`, a bounded response read whole.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::CliError;

/// The largest response read; a health summary is a few hundred bytes per partition in trouble.
const RESPONSE_MAX_BYTES: u64 = 16 << 20;
const TIMEOUT: Duration = Duration::from_secs(10);

/// GETs `path` from `addr` (host:port) and parses the body as JSON, whatever the status: the
/// health summary answers 503 with a body when the node is not healthy.
pub async fn get_json(addr: &str, path: &str) -> Result<serde_json::Value, CliError> {
    let connect_error = |reason: String| CliError::Connect {
        addr: addr.to_string(),
        reason: format!("{reason} (the HTTP port, --http)"),
    };
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| connect_error(e.to_string()))?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
        let lost = |e: std::io::Error| CliError::Disconnected { addr: addr.to_string(), reason: e.to_string() };
        stream.write_all(request.as_bytes()).await.map_err(lost)?;
        let mut response = Vec::new();
        stream.take(RESPONSE_MAX_BYTES).read_to_end(&mut response).await.map_err(lost)?;
        Ok::<_, CliError>(response)
    };
    let response = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| CliError::Disconnected { addr: addr.to_string(), reason: "no answer in 10 s".to_string() })??;
    parse(&response).map_err(|reason| CliError::Protocol(format!("{addr}{path}: {reason}")))
}

fn parse(response: &[u8]) -> Result<serde_json::Value, String> {
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").ok_or("not an HTTP response")?;
    let head = std::str::from_utf8(&response[..split]).map_err(|_| "not an HTTP response")?;
    let status = head.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP response: {status:?}"));
    }
    if head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:")) {
        return Err("chunked responses are not understood".to_string());
    }
    serde_json::from_slice(&response[split + 4..]).map_err(|e| format!("{status}, and the body is not JSON ({e})"))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_a_json_body_whatever_the_status() {
        let response = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 16\r\n\r\n{\"ready\":false}\n";
        assert_eq!(parse(response).unwrap()["ready"], false);
    }

    #[test]
    fn refuses_what_is_not_http_json() {
        assert!(parse(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\n\r\n<html>").is_err());
        assert!(parse(b"garbage\r\n\r\n{}").is_err());
    }
}

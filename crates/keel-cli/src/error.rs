//! The CLI's errors and the exit code each one maps to.

use std::fmt;

/// Exit codes, documented in the README ("Exit codes").
pub mod exit {
    /// The command did what was asked.
    pub const OK: u8 = 0;
    /// The broker refused or failed the operation (unknown topic, invalid config, ...), or the
    /// answer could not be understood.
    pub const FAILED: u8 = 1;
    /// The command line is wrong: a bad flag or value (clap uses the same code).
    pub const USAGE: u8 = 2;
    /// No broker could be reached, or it stopped answering.
    pub const CONNECT: u8 = 3;
    /// `cluster health`: the cluster is not healthy (or did not become healthy in time).
    pub const UNHEALTHY: u8 = 4;
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A bad argument that clap could not catch (an offset spec, a config pair, ...).
    #[error("{0}")]
    Usage(String),
    /// No broker of the list answered.
    #[error("cannot reach {addr}: {reason}; is the broker running? set --brokers or KEEL_BROKERS")]
    Connect { addr: String, reason: String },
    /// A connection broke or a request timed out.
    #[error("lost the connection to {addr}: {reason}")]
    Disconnected { addr: String, reason: String },
    /// The broker answered with a Kafka error code.
    #[error("{context}: {name} ({code}){detail}{hint}", detail = detail(.message), hint = hint_text(.hint))]
    Broker { context: String, code: i16, name: String, message: Option<String>, hint: Option<String> },
    /// The broker does not serve an API at a version this client speaks.
    #[error("the broker at {addr} does not serve {api} at a version this client speaks ({ours})")]
    Unsupported { addr: String, api: String, ours: String },
    /// A malformed or unexpected answer.
    #[error("{0}")]
    Protocol(String),
    /// Anything else that stops the command (stdin, stdout, config file).
    #[error("{0}")]
    Other(String),
    /// `cluster health` found problems.
    #[error("{0}")]
    Unhealthy(String),
}

fn detail(message: &Option<String>) -> String {
    match message {
        Some(message) if !message.is_empty() => format!(": {message}"),
        _ => String::new(),
    }
}

fn hint_text(hint: &Option<String>) -> String {
    match hint {
        Some(hint) => format!("; {hint}"),
        None => String::new(),
    }
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => exit::USAGE,
            CliError::Connect { .. } | CliError::Disconnected { .. } => exit::CONNECT,
            CliError::Unhealthy(_) => exit::UNHEALTHY,
            _ => exit::FAILED,
        }
    }

    /// A broker error for `code` (non-zero) with a hint for the common ones.
    pub fn broker(context: impl Into<String>, code: i16, message: Option<String>) -> CliError {
        let name = error_name(code);
        let hint = match code {
            3 => Some("list topics with `keel topic list`".to_string()),
            36 => Some("use --if-not-exists to ignore it".to_string()),
            69 => Some("list groups with `keel group list`".to_string()),
            105 => Some("list them with `keel transaction list`".to_string()),
            68 => Some("stop its consumers first".to_string()),
            23 => Some("the group's members use another protocol or assignor than range".to_string()),
            _ => None,
        };
        CliError::Broker { context: context.into(), code, name, message, hint }
    }

    pub fn other(error: impl fmt::Display) -> CliError {
        CliError::Other(error.to_string())
    }
}

/// Kafka's name for an error code, e.g. UNKNOWN_TOPIC_OR_PARTITION.
pub fn error_name(code: i16) -> String {
    keel_protocol::error_name(code).unwrap_or_else(|| format!("error code {code}"))
}

/// Turns a non-zero error code into an error.
pub fn check(
    context: impl FnOnce() -> String,
    code: i16,
    message: Option<&kafka_protocol::protocol::StrBytes>,
) -> Result<(), CliError> {
    if code == 0 {
        Ok(())
    } else {
        Err(CliError::broker(context(), code, message.map(|m| m.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_kafkas() {
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(36), "TOPIC_ALREADY_EXISTS");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(30_000), "error code 30000");
    }

    #[test]
    fn broker_errors_carry_a_hint() {
        let error = CliError::broker("cannot describe topic \"x\"", 3, None);
        assert_eq!(
            error.to_string(),
            "cannot describe topic \"x\": UNKNOWN_TOPIC_OR_PARTITION (3); list topics with `keel topic list`"
        );
        assert_eq!(error.exit_code(), exit::FAILED);
    }
}

//! Kafka's names for error codes, as its documentation and tools spell them.

use kafka_protocol::ResponseError;

/// Kafka's name for an error code (`UNKNOWN_TOPIC_OR_PARTITION`), or `None` for a code the
/// codec does not know.
pub fn error_name(code: i16) -> Option<String> {
    match ResponseError::try_from_code(code) {
        Some(ResponseError::Unknown(_)) | None => None,
        Some(error) => Some(screaming_snake(&error.to_string())),
    }
}

/// `UnknownTopicOrPartition` -> `UNKNOWN_TOPIC_OR_PARTITION`.
fn screaming_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::error_name;

    #[test]
    fn names_are_kafkas() {
        assert_eq!(error_name(3).as_deref(), Some("UNKNOWN_TOPIC_OR_PARTITION"));
        assert_eq!(error_name(6).as_deref(), Some("NOT_LEADER_OR_FOLLOWER"));
        assert_eq!(error_name(56).as_deref(), Some("KAFKA_STORAGE_ERROR"));
        assert_eq!(error_name(-1).as_deref(), Some("UNKNOWN_SERVER_ERROR"));
        assert_eq!(error_name(30_000), None);
    }
}

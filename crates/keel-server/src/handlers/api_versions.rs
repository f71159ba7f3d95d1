//! ApiVersions: the advertised table (see `keel_protocol::versions`).

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::ApiVersionsResponse;

pub fn supported() -> ApiVersionsResponse {
    let mut response = ApiVersionsResponse::default();
    response.api_keys = keel_protocol::advertised()
        .iter()
        .map(|range| {
            let mut api = ApiVersion::default();
            api.api_key = range.api_key as i16;
            api.min_version = range.min_version;
            api.max_version = range.max_version;
            api
        })
        .collect();
    response
}

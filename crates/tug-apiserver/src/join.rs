//! Agents joining from other machines, as k3s's do:
//!
//! - `GET /cacerts`, anonymous: the cluster CA (PEM), whose SHA-256 a full
//!   node-join token pins, so the agent checks whom it talks to first;
//! - `POST /v1-tug/node-credentials`, for the node-join token's user (or an
//!   admin), with `{"nodeName": N, "addresses": [IP, ...]}`: a client
//!   certificate for `system:node:N` (group `system:nodes`) and a serving
//!   certificate for the agent's port naming N and its addresses, both
//!   signed by the CA, with their keys.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{NODE_JOIN_GROUP, User};
use crate::pki::Ca;
use crate::status::ApiError;

pub const CACERTS_PATH: &str = "/cacerts";
pub const CREDENTIALS_PATH: &str = "/v1-tug/node-credentials";
/// Addresses a serving certificate may name, at most.
const ADDRESSES_MAX: usize = 16;

pub fn cacerts(ca: &Ca) -> Response {
    let mut response = Response::new(Body::from(ca.cert_pem().to_string()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-pem-file"),
    );
    response
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CredentialsRequest {
    node_name: String,
    #[serde(default)]
    addresses: Vec<String>,
}

pub fn node_credentials(ca: &Ca, user: &User, body: &[u8]) -> Result<Response, ApiError> {
    let allowed = user
        .groups
        .iter()
        .any(|g| g == NODE_JOIN_GROUP || g == "system:masters");
    if !allowed {
        return Err(ApiError::forbidden(
            "",
            "",
            "",
            &format!(
                "User \"{}\" cannot get node credentials: only the node-join token can",
                user.name
            ),
        ));
    }
    let request: CredentialsRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the node credentials request: {e}")))?;
    if let Some(problem) = crate::rest::name_problem(&request.node_name) {
        return Err(ApiError::bad_request(format!("nodeName: {problem}")));
    }
    if request.addresses.len() > ADDRESSES_MAX {
        return Err(ApiError::bad_request(format!(
            "addresses: at most {ADDRESSES_MAX}"
        )));
    }
    if let Some(bad) = request
        .addresses
        .iter()
        .find(|a| a.parse::<std::net::IpAddr>().is_err())
    {
        return Err(ApiError::bad_request(format!(
            "addresses: {bad:?} is not an IP address"
        )));
    }
    let node = &request.node_name;
    let user_name = format!("system:node:{node}");
    let client = ca
        .client(&user_name, &["system:nodes"])
        .map_err(|e| ApiError::internal(format!("issuing the client certificate: {e:#}")))?;
    let mut names = vec![node.clone()];
    names.extend(request.addresses.iter().cloned());
    let serving = ca
        .serving_as(&user_name, &names)
        .map_err(|e| ApiError::internal(format!("issuing the serving certificate: {e:#}")))?;
    tracing::info!(node = %node, by = %user.name, "node credentials issued");
    Ok(crate::rest::json_response(
        StatusCode::OK,
        &json!({
            "ca": ca.cert_pem(),
            "clientCert": client.cert_pem,
            "clientKey": client.key_pem,
            "servingCert": serving.cert_pem,
            "servingKey": serving.key_pem,
        }),
    ))
}

//! API errors, and the one place they become a Kubernetes `Status`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// An error answered to a client as a `Status` with upstream's reason and code.
#[derive(Debug)]
pub struct ApiError {
    pub code: StatusCode,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: StatusCode, reason: &'static str, message: String) -> Self {
        Self {
            code,
            reason,
            message,
            details: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// `pods "web" not found`
    pub fn not_found(resource: &str, group: &str, name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(resource, group)),
        )
        .with_details(details(resource, group, name))
    }

    pub fn already_exists(resource: &str, group: &str, name: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(resource, group)),
        )
        .with_details(details(resource, group, name))
    }

    /// A stale resourceVersion on update, in upstream's words.
    pub fn conflict(resource: &str, group: &str, name: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                qualified(resource, group)
            ),
        )
        .with_details(details(resource, group, name))
    }

    /// 409 with a message of its own (no object details).
    pub fn new_conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "Conflict", message.into())
    }

    /// 409 from server-side apply: one cause per conflicting field.
    pub fn apply_conflict(message: String, conflicts: &[(String, String)]) -> Self {
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(writer, field)| {
                json!({"reason": "FieldManagerConflict", "message": format!("conflict with {writer}"), "field": field})
            })
            .collect();
        Self::new(StatusCode::CONFLICT, "Conflict", message).with_details(json!({"causes": causes}))
    }

    /// 422: `The ConfigMap "x" is invalid: metadata.name: Invalid value: ...`
    pub fn invalid(
        kind: &str,
        group: &str,
        name: &str,
        causes: Vec<(String, String, String)>,
    ) -> Self {
        let summary: Vec<String> = causes
            .iter()
            .map(|(_, field, message)| format!("{field}: {message}"))
            .collect();
        let message = match summary.len() {
            1 => summary[0].clone(),
            _ => format!("[{}]", summary.join(", ")),
        };
        let causes: Vec<Value> = causes
            .into_iter()
            .map(|(reason, field, message)| json!({"reason": reason, "message": message, "field": field}))
            .collect();
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!(
                "{} \"{name}\" is invalid: {message}",
                qualified(kind, group)
            ),
        )
        .with_details(json!({"name": name, "group": group, "kind": kind, "causes": causes}))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message.into())
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            message.into(),
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized".into(),
        )
    }

    /// 403: `pods "web" is forbidden: User "u" cannot get resource ...`
    pub fn forbidden(resource: &str, group: &str, name: &str, reason: &str) -> Self {
        let message = match (resource, name) {
            ("", _) => format!("forbidden: {reason}"),
            (_, "") => format!("{} is forbidden: {reason}", qualified(resource, group)),
            _ => format!(
                "{} {name:?} is forbidden: {reason}",
                qualified(resource, group)
            ),
        };
        let mut details = serde_json::Map::new();
        for (field, value) in [("name", name), ("group", group), ("kind", resource)] {
            if !value.is_empty() {
                details.insert(field.into(), json!(value));
            }
        }
        Self::new(StatusCode::FORBIDDEN, "Forbidden", message).with_details(Value::Object(details))
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/merge-patch+json, application/json-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml, application/yaml, application/vnd.kubernetes.protobuf; got {content_type:?}"
            ),
        )
    }

    /// 410: the resourceVersion a list or watch asked for is compacted.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, "Expired", message.into())
    }

    /// 504: the server could not answer in time; retry after `seconds`.
    pub fn timeout(message: impl Into<String>, seconds: u32) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "Timeout", message.into())
            .with_details(json!({"retryAfterSeconds": seconds}))
    }

    pub fn too_many_requests() -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "Too many requests, please try again later.".into(),
        )
        .with_details(json!({"retryAfterSeconds": 1}))
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message.into(),
        )
    }

    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

fn details(resource: &str, group: &str, name: &str) -> Value {
    let mut details = json!({"name": name, "kind": resource});
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    details
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.status()).unwrap_or_default();
        let mut response = (self.code, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.code == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Store errors, turned into the API's.
pub fn from_store(err: tug_store::Error) -> ApiError {
    match err {
        tug_store::Error::Compacted { requested } => {
            ApiError::expired(format!("too old resource version: {requested}"))
        }
        tug_store::Error::ValueTooLarge { size, .. } => ApiError::too_large(size),
        tug_store::Error::TooManyWatches { .. } => ApiError::too_many_requests(),
        tug_store::Error::FutureRevision { requested, current } => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "Timeout",
            format!("Too large resource version: {requested}, current: {current}"),
        ),
        other => ApiError::internal(other.to_string()),
    }
}

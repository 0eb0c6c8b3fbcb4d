//! The REST verbs over the store: create, get, list, watch, update, patch
//! (merge), delete, for every resource in the registry.
//!
//! Objects are stored as JSON under `/registry/<resource>/<namespace>/<name>`
//! without their resourceVersion, which is the store's mod revision and is
//! set on every read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use tug_api::convert::{self, storage_prefix};
use tug_api::format::timestamp;
use tug_api::registry::Resource;
use tug_api::selector::{FieldSelector, LabelSelector};
use tug_store::{
    EventKind, KeyValue, PutOptions, RangeRequest, Revision, Store, WatchMessage, WatchOptions,
};

use crate::allocate::{self, ServiceCidr};
use crate::auth::{Attributes, Authenticator, Authorizer, Decision, ResourceAttributes, User};
use crate::cache::{Batch, Cached, Caches, Change};
use crate::managed::{self, ApplyError, Scope, Writer};
use crate::patch::{JsonPatchError, json_patch, merge_patch, strategic_merge};
use crate::protobuf::{self, ProtobufError};
use crate::status::{ApiError, from_store};
use crate::table::{self, Include};

/// The largest request body accepted, as kube-apiserver's.
pub const BODY_BYTES_MAX: usize = 3 * 1024 * 1024;
/// Items per store read while a list fills its page.
const LIST_CHUNK: usize = 500;
/// A watch ends after this long unless `timeoutSeconds` says otherwise.
const WATCH_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30 * 60);
/// Bookmarks are sent about this often to watchers that asked for them.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(60);

pub struct ApiState {
    pub store: Arc<dyn Store>,
    pub service_cidr: ServiceCidr,
    /// Watches served at once at most; beyond, 429.
    pub watches: Arc<tokio::sync::Semaphore>,
    pub caches: Caches,
}

/// One request, resolved against the registry.
pub struct Target {
    pub resource: &'static Resource,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

type Query = HashMap<String, String>;

/// An object as read for a write: the write is made only if the object
/// is still at `revision`.
struct Read {
    key: String,
    revision: Revision,
    /// As a client sees it.
    object: Value,
    /// From the watch cache, which may be behind the store.
    cached: bool,
}

/// Tries of one deletion when concurrent writes keep winning.
const DELETE_ATTEMPTS: u32 = 16;
/// Deletions a DELETE of a collection makes at once.
const DELETE_COLLECTION_WORKERS: usize = 32;

fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub(crate) fn key(resource: &Resource, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(namespace) => format!("{}{namespace}/{name}", storage_prefix(resource)),
        None => format!("{}{name}", storage_prefix(resource)),
    }
}

fn collection_prefix(resource: &Resource, namespace: Option<&str>) -> String {
    match namespace {
        Some(namespace) => format!("{}{namespace}/", storage_prefix(resource)),
        None => storage_prefix(resource),
    }
}

/// The stored object, as a client sees it: with kind, apiVersion and resourceVersion.
pub(crate) fn decode(resource: &Resource, kv: &KeyValue) -> Result<Value, ApiError> {
    let mut object: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is not JSON: {e}", kv.key)))?;
    convert::from_stored(resource, &mut object);
    object["kind"] = json!(resource.kind);
    object["apiVersion"] = json!(resource.api_version());
    object["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
    Ok(object)
}

/// What a write answers: the object as written, at its new revision. Read
/// back from the store only where the stored form differs.
fn as_written(resource: &Resource, mut object: Value, kv: &KeyValue) -> Result<Value, ApiError> {
    if convert::converts(resource) {
        return decode(resource, kv);
    }
    object["kind"] = json!(resource.kind);
    object["apiVersion"] = json!(resource.api_version());
    object["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
    Ok(object)
}

/// The stored form of an object: its storage version, without its
/// resourceVersion (the store's revision says it).
pub(crate) fn encode(resource: &Resource, object: &Value) -> Bytes {
    let mut stored = object.clone();
    convert::to_stored(resource, &mut stored);
    if let Some(metadata) = stored["metadata"].as_object_mut() {
        metadata.remove("resourceVersion");
    }
    Bytes::from(serde_json::to_vec(&stored).unwrap_or_default())
}

pub(crate) fn json_response(code: StatusCode, body: &Value) -> Response {
    let mut response = (code, serde_json::to_vec(body).unwrap_or_default()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media == "application/vnd.kubernetes.protobuf" {
        return protobuf::decode(body).map_err(|err| match err {
            ProtobufError::Malformed(message) => ApiError::bad_request(message),
            ProtobufError::UnsupportedKind(_) | ProtobufError::UnsupportedField(_) => {
                ApiError::unsupported_media_type(content_type)
            }
        });
    }
    let value: Value = match media {
        "application/json" | "" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the object provided is unrecognized (must be of type JSON): {e}"
            ))
        })?,
        "application/yaml" => serde_saphyr::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))?,
        _ => return Err(ApiError::unsupported_media_type(content_type)),
    };
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the object provided is not a JSON object",
        ));
    }
    Ok(value)
}

/// DNS-1123 subdomain, as most names must be.
pub(crate) fn name_problem(name: &str) -> Option<String> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if valid {
        None
    } else {
        Some(format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        ))
    }
}

fn generated_suffix() -> String {
    // Upstream's alphabet: no vowels, no look-alikes.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let random = uuid::Uuid::new_v4();
    random.as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

fn check_type(resource: &Resource, object: &Value) -> Result<(), ApiError> {
    if let Some(api_version) = object["apiVersion"].as_str()
        && api_version != resource.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            resource.api_version()
        )));
    }
    if let Some(kind) = object["kind"].as_str()
        && kind != resource.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            resource.kind
        )));
    }
    Ok(())
}

fn dry_run(query: &Query) -> bool {
    query.get("dryRun").is_some_and(|v| v == "All")
}

impl ApiState {
    /// Whether objects may be created in a namespace: it exists and is
    /// not being deleted (404 and 403 otherwise, as upstream).
    async fn check_namespace(
        &self,
        resource: &Resource,
        namespace: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        let namespaces =
            tug_api::registry::find("", "v1", "namespaces").expect("namespaces are served");
        let key = key(namespaces, None, namespace);
        let terminating = |object: &Value| !object["metadata"]["deletionTimestamp"].is_null();
        // The watch cache's copy says yes, as upstream's admission asks its
        // informer; the store says no (the cache may not have it yet).
        let cache = self.caches.get(namespaces).await.map_err(from_store)?;
        if cache
            .object(&key)
            .is_some_and(|cached| !terminating(&cached.value()))
        {
            return Ok(());
        }
        let Some(kv) = self.store.get(&key, None).await.map_err(from_store)?.kv else {
            return Err(ApiError::not_found("namespaces", "", namespace));
        };
        if terminating(&decode(namespaces, &kv)?) {
            return Err(ApiError::forbidden(
                resource.plural,
                resource.group,
                name,
                &format!(
                    "unable to create new content in namespace {namespace} because it is being terminated"
                ),
            ));
        }
        Ok(())
    }

    /// The Priority admission plugin: a new pod's priority (and
    /// preemption policy) come from its PriorityClass, or from the global
    /// default class, or are 0 (PreemptLowerPriority); a pod stating
    /// other values, or naming a class that does not exist, is refused.
    async fn admit_priority(&self, name: &str, pod: &mut Value) -> Result<(), ApiError> {
        let classes = tug_api::registry::find("scheduling.k8s.io", "v1", "priorityclasses")
            .expect("priority classes are served");
        let cache = self.caches.get(classes).await.map_err(from_store)?;
        let listed = cache.list(
            &tug_api::convert::storage_prefix(classes),
            &LabelSelector::default(),
            &FieldSelector::default(),
            0,
        );
        let all: Vec<Value> = listed.items.iter().map(|c| c.value()).collect();
        let spec = &mut pod["spec"];
        let wanted = spec["priorityClassName"]
            .as_str()
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        let class = match &wanted {
            Some(wanted) => {
                let found = all
                    .iter()
                    .find(|c| c["metadata"]["name"].as_str() == Some(wanted.as_str()));
                let Some(found) = found else {
                    return Err(ApiError::forbidden(
                        "pods",
                        "",
                        name,
                        &format!("no PriorityClass with name {wanted} was found"),
                    ));
                };
                Some(found)
            }
            None => all
                .iter()
                .filter(|c| c["globalDefault"].as_bool() == Some(true))
                .min_by_key(|c| c["value"].as_i64().unwrap_or(0)),
        };
        let value = class.and_then(|c| c["value"].as_i64()).unwrap_or(0);
        let policy = class
            .and_then(|c| c["preemptionPolicy"].as_str())
            .unwrap_or("PreemptLowerPriority")
            .to_string();
        if let Some(stated) = spec["priority"].as_i64()
            && stated != value
        {
            return Err(ApiError::forbidden(
                "pods",
                "",
                name,
                &format!(
                    "the integer value of priority ({stated}) must not be provided in pod spec; \
                     priority admission controller computed {value} from the given PriorityClass name"
                ),
            ));
        }
        if let Some(stated) = spec["preemptionPolicy"].as_str()
            && stated != policy
        {
            return Err(ApiError::forbidden(
                "pods",
                "",
                name,
                &format!(
                    "the string value of PreemptionPolicy ({stated}) must not be provided in pod spec; \
                     priority admission controller computed {policy} from the given PriorityClass name"
                ),
            ));
        }
        if let (None, Some(class)) = (&wanted, class) {
            spec["priorityClassName"] = class["metadata"]["name"].clone();
        }
        spec["priority"] = json!(value);
        spec["preemptionPolicy"] = json!(policy);
        Ok(())
    }

    pub async fn create(
        &self,
        target: &Target,
        query: &Query,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Response, ApiError> {
        let resource = target.resource;
        let manager = field_manager(query, headers, "CreateOptions")?;
        let mut object = parse_body(headers, body)?;
        check_type(resource, &object)?;
        let warnings = unknown_fields(resource, query, &mut object)?;
        self.create_object(target, query, object, warnings, Some(&manager))
            .await
    }

    /// Creates `object`; `manager`, when given, is recorded as the one who
    /// set its fields (an apply has recorded itself already).
    async fn create_object(
        &self,
        target: &Target,
        query: &Query,
        mut object: Value,
        warnings: Vec<String>,
        manager: Option<&str>,
    ) -> Result<Response, ApiError> {
        let resource = target.resource;
        if resource.kind == "CustomResourceDefinition" {
            crate::crd::validate(&mut object)?;
        }
        if !object["metadata"].is_object() {
            object["metadata"] = json!({});
        }
        let metadata = object["metadata"]
            .as_object_mut()
            .expect("metadata is an object");
        let mut name = metadata
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if name.is_empty()
            && let Some(prefix) = metadata.get("generateName").and_then(Value::as_str)
        {
            name = format!("{prefix}{}", generated_suffix());
        }
        if name.is_empty() {
            return Err(ApiError::invalid(
                resource.kind,
                resource.group,
                "",
                vec![(
                    "FieldValueRequired".into(),
                    "metadata.name".into(),
                    "Required value: name or generateName is required".into(),
                )],
            ));
        }
        if let Some(problem) = name_problem(&name) {
            return Err(ApiError::invalid(
                resource.kind,
                resource.group,
                &name,
                vec![("FieldValueInvalid".into(), "metadata.name".into(), problem)],
            ));
        }
        metadata.insert("name".into(), json!(name));
        match (
            &target.namespace,
            metadata.get("namespace").and_then(Value::as_str),
        ) {
            (Some(path), Some(body)) if !body.is_empty() && body != path => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            (Some(path), _) => {
                metadata.insert("namespace".into(), json!(path));
            }
            (None, _) => {
                metadata.remove("namespace");
            }
        }
        metadata.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        metadata.insert("creationTimestamp".into(), json!(timestamp(now_seconds())));
        metadata.remove("resourceVersion");
        metadata.remove("deletionTimestamp");
        metadata.remove("deletionGracePeriodSeconds");
        if object.get("spec").is_some() {
            object["metadata"]["generation"] = json!(1);
        }
        reset_status(resource, &mut object);
        tug_api::defaults::apply(resource.group, resource.plural, &mut object);
        if let Some(manager) = manager {
            record(resource, None, &mut object, manager, None);
        }

        if let Some(namespace) = &target.namespace {
            self.check_namespace(resource, namespace, &name).await?;
        }
        if resource.group.is_empty() && resource.plural == "pods" {
            self.admit_priority(&name, &mut object).await?;
        }
        if let Some(namespace) = &target.namespace {
            self.admit_limits(resource, namespace, &name, &mut object)
                .await?;
            self.admit_quota(resource, namespace, &name, &object, dry_run(query))
                .await?;
        }
        if dry_run(query) {
            object["kind"] = json!(resource.kind);
            object["apiVersion"] = json!(resource.api_version());
            return Ok(with_warnings(
                json_response(StatusCode::CREATED, &object),
                &warnings,
            ));
        }
        let key = key(resource, target.namespace.as_deref(), &name);
        let claimed = if is_service(resource) {
            if self
                .store
                .get(&key, None)
                .await
                .map_err(from_store)?
                .kv
                .is_some()
            {
                return Err(ApiError::already_exists(
                    resource.plural,
                    resource.group,
                    &name,
                ));
            }
            allocate::service(self.store.as_ref(), self.service_cidr, &mut object).await?
        } else {
            Vec::new()
        };
        let created = self
            .store
            .create(&key, encode(resource, &object), put_options(resource))
            .await;
        if created.is_err() {
            allocate::release(self.store.as_ref(), &claimed).await;
        }
        match created {
            Ok(kv) => Ok(with_warnings(
                json_response(StatusCode::CREATED, &as_written(resource, object, &kv)?),
                &warnings,
            )),
            Err(tug_store::Error::AlreadyExists { .. }) => Err(ApiError::already_exists(
                resource.plural,
                resource.group,
                &name,
            )),
            Err(err) => Err(from_store(err)),
        }
    }

    /// What deleting an object gives back besides its key.
    async fn deleted(&self, resource: &Resource, object: &Value) {
        if is_service(resource) {
            allocate::release(self.store.as_ref(), &allocate::held_by(object)).await;
        }
    }

    /// A review: answered from who is asking (or whom it names) by the
    /// authenticator and authorizer, never stored.
    pub async fn review(
        &self,
        target: &Target,
        user: &User,
        authorizer: &dyn Authorizer,
        authn: &Authenticator,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Response, ApiError> {
        let resource = target.resource;
        let mut review = parse_body(headers, body)?;
        check_type(resource, &review)?;
        review["kind"] = json!(resource.kind);
        review["apiVersion"] = json!(resource.api_version());
        let mut metadata = json!({"creationTimestamp": null});
        if let Some(namespace) = &target.namespace {
            metadata["namespace"] = json!(namespace);
        }
        review["metadata"] = metadata;
        let invalid = |field: &str, message: &str| {
            ApiError::invalid(
                resource.kind,
                resource.group,
                "",
                vec![("FieldValueInvalid".into(), field.into(), message.into())],
            )
        };
        let user_info = |user: &User| {
            let mut info = json!({"username": user.name, "groups": user.groups});
            if !user.uid.is_empty() {
                info["uid"] = json!(user.uid);
            }
            info
        };
        match resource.kind {
            "SelfSubjectReview" => {
                review["status"] = json!({"userInfo": user_info(user)});
            }
            "TokenReview" => {
                let token = review["spec"]["token"].as_str().unwrap_or("").to_string();
                review["status"] = match authn.token(self.store.as_ref(), &token).await {
                    Some(found) => json!({"authenticated": true, "user": user_info(&found)}),
                    None => json!({"user": {}}),
                };
            }
            "SelfSubjectRulesReview" => {
                let namespace = review["spec"]["namespace"].as_str().unwrap_or("");
                let (resource_rules, non_resource_rules, incomplete) =
                    authorizer.rules(user, namespace);
                review["status"] = json!({
                    "resourceRules": resource_rules,
                    "nonResourceRules": non_resource_rules,
                    "incomplete": incomplete,
                });
            }
            _ => {
                let spec = &mut review["spec"];
                if spec["resourceAttributes"].is_null() == spec["nonResourceAttributes"].is_null() {
                    return Err(invalid(
                        "spec.resourceAttributes",
                        "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
                    ));
                }
                if let Some(namespace) = &target.namespace {
                    // LocalSubjectAccessReview: about its own namespace only.
                    if !spec["nonResourceAttributes"].is_null() {
                        return Err(invalid(
                            "spec.nonResourceAttributes",
                            "Invalid value: \"\": disallowed on this kind of request",
                        ));
                    }
                    let asked = &mut spec["resourceAttributes"]["namespace"];
                    match asked.as_str() {
                        None | Some("") => *asked = json!(namespace),
                        Some(asked) if asked == namespace => {}
                        Some(_) => {
                            return Err(ApiError::bad_request(format!(
                                "spec.resourceAttributes.namespace must match namespace: {namespace}"
                            )));
                        }
                    }
                }
                let subject = if resource.kind == "SelfSubjectAccessReview" {
                    user.clone()
                } else {
                    let subject = User {
                        name: spec["user"].as_str().unwrap_or("").into(),
                        uid: spec["uid"].as_str().unwrap_or("").into(),
                        groups: string_list(&spec["groups"]),
                    };
                    if subject.name.is_empty() && subject.groups.is_empty() {
                        return Err(invalid(
                            "spec.user",
                            "Invalid value: \"\": at least one of user or group must be specified",
                        ));
                    }
                    subject
                };
                let attributes = review_attributes(spec);
                review["status"] = match authorizer.authorize(&subject, &attributes) {
                    Decision::Allow => json!({"allowed": true}),
                    Decision::Deny(reason) if reason.is_empty() => json!({"allowed": false}),
                    Decision::Deny(reason) => json!({"allowed": false, "reason": reason}),
                };
            }
        }
        Ok(json_response(StatusCode::CREATED, &review))
    }

    /// `POST serviceaccounts/{name}/token`: a TokenRequest answered with a
    /// signed token for the service account, never stored.
    pub async fn token_request(
        &self,
        target: &Target,
        issuer: &crate::serviceaccount::Issuer,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Response, ApiError> {
        use crate::serviceaccount::{
            Claims, EXPIRATION_DEFAULT_SECONDS, EXPIRATION_MIN_SECONDS, ISSUER,
        };
        let mut request = parse_body(headers, body)?;
        if request["kind"] != "TokenRequest" {
            return Err(ApiError::bad_request(format!(
                "expected a TokenRequest, got {}",
                request["kind"]
            )));
        }
        let account = decode(target.resource, &self.load(target).await?)?;
        let name = target.name.clone().unwrap_or_default();
        let seconds = request["spec"]["expirationSeconds"]
            .as_i64()
            .unwrap_or(EXPIRATION_DEFAULT_SECONDS);
        if seconds < EXPIRATION_MIN_SECONDS {
            return Err(ApiError::invalid(
                "TokenRequest",
                "authentication.k8s.io",
                &name,
                vec![(
                    "FieldValueInvalid".into(),
                    "spec.expirationSeconds".into(),
                    format!(
                        "Invalid value: {seconds}: may not specify a duration less than 10 minutes"
                    ),
                )],
            ));
        }
        let mut audiences = string_list(&request["spec"]["audiences"]);
        if audiences.is_empty() {
            audiences.push(ISSUER.to_string());
        }
        let claims = Claims {
            namespace: target.namespace.clone().unwrap_or_default(),
            name: name.clone(),
            uid: account["metadata"]["uid"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        };
        let now = now_seconds();
        let bound = request["spec"]["boundObjectRef"].clone();
        let token = issuer
            .issue(
                &claims,
                &audiences,
                now,
                seconds,
                (!bound.is_null()).then_some(bound),
            )
            .map_err(|e| ApiError::internal(e.to_string()))?;
        request["apiVersion"] = json!("authentication.k8s.io/v1");
        request["metadata"] = json!({
            "name": name,
            "namespace": claims.namespace,
            "creationTimestamp": timestamp(now),
        });
        request["spec"]["audiences"] = json!(audiences);
        request["spec"]["expirationSeconds"] = json!(seconds);
        request["status"] =
            json!({"token": token, "expirationTimestamp": timestamp(now + seconds)});
        Ok(json_response(StatusCode::CREATED, &request))
    }

    /// `POST pods/{name}/binding` (a scheduler places a pod on a node) and
    /// `POST pods/{name}/eviction` (a polite delete; PodDisruptionBudgets
    /// are checked once their controller exists). Both answer a Status.
    pub async fn pod_subresource(
        &self,
        target: &Target,
        query: &Query,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Response, ApiError> {
        let resource = target.resource;
        let name = target.name.clone().unwrap_or_default();
        let request = parse_body(headers, body)?;
        let named = request["metadata"]["name"].as_str().unwrap_or("");
        if !named.is_empty() && named != name {
            return Err(ApiError::bad_request(format!(
                "name in URL does not match name in {} object",
                request["kind"].as_str().unwrap_or("request")
            )));
        }
        match target.subresource.as_deref() {
            Some("binding") => {
                let cached = self.cached(target).is_some();
                if let Err(err) = self.bind(target, query, &request, cached).await {
                    if !cached {
                        return Err(err);
                    }
                    self.bind(target, query, &request, false).await?;
                }
            }
            _ => {
                let current = self.load(target).await?;
                let pod = decode(resource, &current)?;
                if !dry_run(query) {
                    self.take_disruption(&pod).await?;
                }
                let options = request.get("deleteOptions").cloned().unwrap_or(json!({}));
                self.delete_object(resource, current, &options, query)
                    .await?;
            }
        }
        Ok(json_response(
            StatusCode::CREATED,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        ))
    }

    /// One binding, on the watch cache's copy of the pod if `cached` (see
    /// [`Self::read_for_write`]).
    async fn bind(
        &self,
        target: &Target,
        query: &Query,
        request: &Value,
        cached: bool,
    ) -> Result<(), ApiError> {
        let resource = target.resource;
        let name = target.name.clone().unwrap_or_default();
        let Read {
            key,
            revision,
            object: mut pod,
            ..
        } = self.read_for_write(target, cached).await?;
        let node = request["target"]["name"].as_str().unwrap_or("");
        if node.is_empty() {
            return Err(ApiError::invalid(
                "Binding",
                "",
                &name,
                vec![(
                    "FieldValueRequired".into(),
                    "target.name".into(),
                    "Required value".into(),
                )],
            ));
        }
        let conflict = |why: String| ApiError {
            code: StatusCode::CONFLICT,
            reason: "Conflict",
            message: format!("Operation cannot be fulfilled on pods/binding \"{name}\": {why}"),
            details: Some(json!({"name": name, "kind": "pods/binding"})),
        };
        if !pod["metadata"]["deletionTimestamp"].is_null() {
            return Err(conflict(format!(
                "pod {name} is being deleted, cannot be assigned to a host"
            )));
        }
        if let Some(assigned) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            return Err(conflict(format!(
                "pod {name} is already assigned to node \"{assigned}\""
            )));
        }
        pod["spec"]["nodeName"] = json!(node);
        if let Some(annotations) = request["metadata"]["annotations"].as_object() {
            for (key, value) in annotations {
                pod["metadata"]["annotations"][key] = value.clone();
            }
        }
        let scheduled = json!({
            "type": "PodScheduled",
            "status": "True",
            "lastProbeTime": null,
            "lastTransitionTime": timestamp(now_seconds()),
        });
        let conditions = pod["status"]["conditions"].as_array_mut();
        match conditions {
            Some(conditions) => {
                conditions.retain(|c| c["type"] != "PodScheduled");
                conditions.push(scheduled);
            }
            None => pod["status"]["conditions"] = json!([scheduled]),
        }
        if !dry_run(query) {
            self.store
                .update(
                    &key,
                    encode(resource, &pod),
                    revision,
                    put_options(resource),
                )
                .await
                .map_err(|err| write_error(resource, &name, err))?;
        }
        Ok(())
    }

    /// An eviction's check, as upstream's: a running pod that a
    /// PodDisruptionBudget selects may go only if the budget allows a
    /// disruption, which the eviction then takes (the budget's status
    /// counts one fewer and lists the pod until the controller sees it
    /// gone); otherwise 429 with the budget's reason. Pods not running
    /// (pending, finished, already being deleted) go regardless.
    async fn take_disruption(&self, pod: &Value) -> Result<(), ApiError> {
        let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
        if matches!(phase, "Pending" | "Succeeded" | "Failed")
            || !pod["metadata"]["deletionTimestamp"].is_null()
        {
            return Ok(());
        }
        let budgets = tug_api::registry::find("policy", "v1", "poddisruptionbudgets")
            .expect("budgets are served");
        let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let labels = pod["metadata"]["labels"].as_object();
        let refused = |cause: String| {
            let mut error = ApiError::too_many_requests();
            error.message =
                "Cannot evict pod as it would violate the pod's disruption budget.".into();
            error.details =
                Some(json!({"causes": [{"reason": "DisruptionBudget", "message": cause}]}));
            error
        };
        // A conflicting update of the budget is tried again on its new
        // version, a few times.
        for _ in 0..5 {
            let listed = self
                .store
                .range(tug_store::RangeRequest {
                    prefix: format!("{}{namespace}/", tug_api::convert::storage_prefix(budgets)),
                    ..tug_store::RangeRequest::default()
                })
                .await
                .map_err(from_store)?;
            let mut matching = Vec::new();
            for kv in listed.kvs {
                let budget = decode(budgets, &kv)?;
                let selects = LabelSelector::from_object(&budget["spec"]["selector"])
                    .is_some_and(|selector| selector.matches(labels));
                if selects {
                    matching.push((kv, budget));
                }
            }
            let (kv, mut budget) = match matching.len() {
                0 => return Ok(()),
                1 => matching.remove(0),
                _ => {
                    return Err(ApiError::internal(
                        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                    ));
                }
            };
            let budget_name = budget["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let observed = budget["status"]["observedGeneration"].as_i64().unwrap_or(0);
            if observed < budget["metadata"]["generation"].as_i64().unwrap_or(0) {
                return Err(refused(format!(
                    "The disruption budget {budget_name} is still being processed by the server."
                )));
            }
            let allowed = budget["status"]["disruptionsAllowed"].as_i64().unwrap_or(0);
            if allowed <= 0 {
                return Err(refused(format!(
                    "The disruption budget {budget_name} needs {} healthy pods and has {} currently",
                    budget["status"]["desiredHealthy"].as_i64().unwrap_or(0),
                    budget["status"]["currentHealthy"].as_i64().unwrap_or(0),
                )));
            }
            budget["status"]["disruptionsAllowed"] = json!(allowed - 1);
            if !budget["status"]["disruptedPods"].is_object() {
                budget["status"]["disruptedPods"] = json!({});
            }
            budget["status"]["disruptedPods"][name] = json!(timestamp(now_seconds()));
            match self
                .store
                .update(
                    &kv.key,
                    encode(budgets, &budget),
                    kv.mod_revision,
                    put_options(budgets),
                )
                .await
            {
                Ok(_) => return Ok(()),
                Err(tug_store::Error::Conflict { .. }) => continue,
                Err(err) => return Err(from_store(err)),
            }
        }
        Err(ApiError::too_many_requests())
    }

    async fn load(&self, target: &Target) -> Result<KeyValue, ApiError> {
        let resource = target.resource;
        let name = target.name.as_deref().unwrap_or_default();
        self.store
            .get(&key(resource, target.namespace.as_deref(), name), None)
            .await
            .map_err(from_store)?
            .kv
            .ok_or_else(|| ApiError::not_found(resource.plural, resource.group, name))
    }

    /// The object `target` names, read for a write. With `cached`, the
    /// watch cache's copy when it has one: that may be behind the store,
    /// and a write made from it then fails on the revision. Whatever
    /// fails on a cached copy is done again on the store's, as upstream's
    /// GuaranteedUpdate does with the object its cache suggests.
    async fn read_for_write(&self, target: &Target, cached: bool) -> Result<Read, ApiError> {
        let resource = target.resource;
        if cached && let Some((key, object)) = self.cached(target) {
            return Ok(Read {
                key,
                revision: object.revision,
                object: object.value(),
                cached: true,
            });
        }
        let current = self.load(target).await?;
        Ok(Read {
            object: decode(resource, &current)?,
            key: current.key,
            revision: current.mod_revision,
            cached: false,
        })
    }

    /// The watch cache's copy of the object `target` names, with its key,
    /// if the cache runs and has it.
    fn cached(&self, target: &Target) -> Option<(String, Arc<crate::cache::Cached>)> {
        let key = key(
            target.resource,
            target.namespace.as_deref(),
            target.name.as_deref().unwrap_or_default(),
        );
        let object = self.caches.running(target.resource)?.object(&key)?;
        Some((key, object))
    }

    /// The object `target` names, as a client reads it.
    pub async fn object(&self, target: &Target) -> Result<Value, ApiError> {
        decode(target.resource, &self.load(target).await?)
    }

    pub async fn get(
        &self,
        target: &Target,
        headers: &HeaderMap,
        query: &Query,
    ) -> Result<Response, ApiError> {
        let object = decode(target.resource, &self.load(target).await?)?;
        if target.subresource.as_deref() == Some("scale") {
            return Ok(json_response(
                StatusCode::OK,
                &scale_of(target.resource, &object),
            ));
        }
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if table::wanted(accept) {
            let metadata = json!({"resourceVersion": object["metadata"]["resourceVersion"]});
            let include = Include::parse(query.get("includeObject").map(String::as_str));
            return Ok(json_response(
                StatusCode::OK,
                &table::table(target.resource, &[object], metadata, include, now_seconds()),
            ));
        }
        if table::metadata_wanted(accept) {
            return Ok(json_response(
                StatusCode::OK,
                &table::partial_metadata(&object),
            ));
        }
        Ok(json_response(StatusCode::OK, &object))
    }

    /// PUT of an object or of its status subresource.
    pub async fn update(
        &self,
        target: &Target,
        query: &Query,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Response, ApiError> {
        let cached = self.cached(target).is_some();
        match self.update_once(target, query, headers, body, cached).await {
            Err(_) if cached => self.update_once(target, query, headers, body, false).await,
            written => written,
        }
    }

    /// One PUT, on the watch cache's copy of the object if `cached` (see
    /// [`Self::read_for_write`]).
    async fn update_once(
        &self,
        target: &Target,
        query: &Query,
        headers: &HeaderMap,
        body: &[u8],
        cached: bool,
    ) -> Result<Response, ApiError> {
        let resource = target.resource;
        let name = target.name.clone().unwrap_or_default();
        let manager = field_manager(query, headers, "UpdateOptions")?;
        let mut object = parse_body(headers, body)?;
        if target.subresource.as_deref() == Some("scale") {
            let current = self.load(target).await?;
            return self
                .write_scale(target, query, &manager, &current, object)
                .await;
        }
        check_type(resource, &object)?;
        let warnings = unknown_fields(resource, query, &mut object)?;
        if object["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n != name)
        {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        let current = self.read_for_write(target, cached).await?;
        self.write_client_object(target, query, &manager, &current, object, &warnings)
            .await
    }

    /// Writes what a client sent (a whole object, or one patched) over
    /// `current`: at the revision it names if any, keeping what the
    /// system owns, recording its fields for `manager`.
    async fn write_client_object(
        &self,
        target: &Target,
        query: &Query,
        manager: &str,
        current: &Read,
        object: Value,
        warnings: &[String],
    ) -> Result<Response, ApiError> {
        let resource = target.resource;
        let name = target.name.as_deref().unwrap_or_default();
        let wanted_version = object["metadata"]["resourceVersion"].as_str().unwrap_or("");
        if !wanted_version.is_empty() && wanted_version != current.revision.to_string() {
            return Err(ApiError::conflict(resource.plural, resource.group, name));
        }
        let mut updated = merge_update(
            resource,
            &current.object,
            object,
            target.subresource.as_deref(),
        );
        record(
            resource,
            Some(&current.object),
            &mut updated,
            manager,
            target.subresource.as_deref(),
        );
        let written = self.write_update(target, query, current, updated).await?;
        Ok(with_warnings(written, warnings))
    }

    /// PATCH with a JSON merge patch (RFC 7386) or a JSON patch (RFC 6902).
    /// A patch, applied again to the object as it is now when a concurrent
    /// write won (as upstream's GuaranteedUpdate), unless the patch itself
    /// names a resourceVersion.
    pub async fn patch(
        &self,
        target: &Target,
        query: &Query,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Response, ApiError> {
        // Server-side apply's conflicts are about field managers: final.
        let apply = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/apply-patch+yaml"));
        let pinned = apply
            || serde_json::from_slice::<Value>(body)
                .ok()
                .is_some_and(|p| !p["metadata"]["resourceVersion"].is_null());
        // The first try on the watch cache's copy (see `read_for_write`).
        let mut cached = !apply && self.cached(target).is_some();
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.patch_once(target, query, headers, body, cached).await {
                Err(_) if cached => cached = false,
                Err(err)
                    if err.code == StatusCode::CONFLICT
                        && !pinned
                        && attempts < DELETE_ATTEMPTS => {}
                other => return other,
            }
        }
    }

    async fn patch_once(
        &self,
        target: &Target,
        query: &Query,
        headers: &HeaderMap,
        body: &[u8],
        cached: bool,
    ) -> Result<Response, ApiError> {
        let resource = target.resource;
        let name = target.name.as_deref().unwrap_or_default();
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let media = content_type.split(';').next().unwrap_or("").trim();
        if media == "application/apply-patch+yaml" {
            return self.apply(target, query, headers, body).await;
        }
        let manager = field_manager(query, headers, "PatchOptions")?;
        if query.contains_key("force") {
            return Err(ApiError::invalid(
                "PatchOptions",
                "meta.k8s.io",
                "",
                vec![(
                    "FieldValueForbidden".into(),
                    "force".into(),
                    "Forbidden: may not be specified for non-apply patch".into(),
                )],
            ));
        }
        if !matches!(
            media,
            "application/merge-patch+json"
                | "application/json-patch+json"
                | "application/strategic-merge-patch+json"
        ) {
            return Err(ApiError::unsupported_media_type(content_type));
        }
        if media == "application/strategic-merge-patch+json"
            && tug_api::registry::is_custom(resource)
        {
            // Custom resources have no patch strategies; upstream refuses.
            return Err(ApiError::unsupported_media_type(content_type));
        }
        let patch: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
        let scale = target.subresource.as_deref() == Some("scale");
        if scale {
            let current = self.load(target).await?;
            let mut patched = scale_of(resource, &decode(resource, &current)?);
            Self::apply_patch(resource, name, media, &patch, &mut patched)?;
            return self
                .write_scale(target, query, &manager, &current, patched)
                .await;
        }
        let current = self.read_for_write(target, cached).await?;
        let mut patched = current.object.clone();
        Self::apply_patch(resource, name, media, &patch, &mut patched)?;
        let warnings = unknown_fields(resource, query, &mut patched)?;
        self.write_client_object(target, query, &manager, &current, patched, &warnings)
            .await
    }

    /// Applies a merge, strategic merge or JSON patch to `patched`.
    fn apply_patch(
        resource: &Resource,
        name: &str,
        media: &str,
        patch: &Value,
        patched: &mut Value,
    ) -> Result<(), ApiError> {
        let does_not_apply = |message: String| {
            ApiError::invalid(
                resource.kind,
                resource.group,
                name,
                vec![(
                    "FieldValueInvalid".into(),
                    "patch".into(),
                    format!("Invalid value: {patch}: {message}"),
                )],
            )
        };
        if media == "application/merge-patch+json" {
            merge_patch(patched, patch);
        } else if media == "application/strategic-merge-patch+json" {
            strategic_merge(patched, patch).map_err(|err| match err {
                JsonPatchError::Malformed(message) => ApiError::bad_request(message),
                JsonPatchError::DoesNotApply(message) => does_not_apply(message),
            })?;
        } else {
            json_patch(patched, patch).map_err(|err| match err {
                JsonPatchError::Malformed(message) => ApiError::bad_request(message),
                JsonPatchError::DoesNotApply(message) => does_not_apply(message),
            })?;
        }
        Ok(())
    }

    /// Server-side apply (`application/apply-patch+yaml`): merges the
    /// configuration into the object, or creates it, as its field manager.
    async fn apply(
        &self,
        target: &Target,
        query: &Query,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Response, ApiError> {
        let resource = target.resource;
        let name = target.name.as_deref().unwrap_or_default();
        let subresource = target.subresource.as_deref();
        if subresource.is_some_and(|s| s != "status") {
            return Err(ApiError::unsupported_media_type(
                "application/apply-patch+yaml",
            ));
        }
        let Some(manager) = query.get("fieldManager") else {
            return Err(options_invalid(
                "PatchOptions",
                "FieldValueRequired",
                "fieldManager",
                "Required value: is required for apply patch".into(),
            ));
        };
        let manager = field_manager(query, headers, "PatchOptions").map(|_| manager.clone())?;
        let force = match query.get("force").map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "invalid value for force: {other:?}"
                )));
            }
        };
        let mut config: Value = serde_saphyr::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        if !config.is_object() {
            return Err(ApiError::bad_request(
                "error decoding YAML: the patch is not an object",
            ));
        }
        if !config["metadata"]["managedFields"].is_null() {
            return Err(ApiError::bad_request("metadata.managedFields must be nil"));
        }
        let api_version = config["apiVersion"].as_str().unwrap_or("");
        let kind = config["kind"].as_str().unwrap_or("");
        if api_version != resource.api_version() || kind != resource.kind {
            let group_version = if api_version.contains('/') {
                api_version.to_string()
            } else {
                format!("/{api_version}")
            };
            return Err(ApiError::bad_request(format!(
                "invalid object type: {group_version}, Kind={kind}"
            )));
        }
        let given_name = config["metadata"]["name"].as_str().unwrap_or("");
        if given_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({given_name}) does not match the name on the URL ({name})"
            )));
        }
        match (&target.namespace, config["metadata"]["namespace"].as_str()) {
            (Some(path), Some(given)) if !given.is_empty() && given != path => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            (None, Some(given)) if !given.is_empty() => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {}
        }
        let warnings = unknown_fields(resource, query, &mut config)?;
        let current = self
            .store
            .get(&key(resource, target.namespace.as_deref(), name), None)
            .await
            .map_err(from_store)?
            .kv;
        let old = current
            .as_ref()
            .map(|kv| decode(resource, kv))
            .transpose()?;
        if old.is_none() {
            if subresource.is_some() {
                return Err(ApiError::not_found(resource.plural, resource.group, name));
            }
            if let Some(uid) = config["metadata"]["uid"].as_str() {
                return Err(ApiError::new_conflict(format!(
                    "uid mismatch: the provided object specified uid {uid}, and no existing object was found"
                )));
            }
        }
        let version = config["metadata"]["resourceVersion"].as_str().unwrap_or("");
        if let Some(current) = &current
            && !version.is_empty()
            && version != current.mod_revision.to_string()
        {
            return Err(ApiError::conflict(resource.plural, resource.group, name));
        }
        let now = timestamp(now_seconds());
        let writer = Writer {
            manager: &manager,
            api_version: &resource.api_version(),
            subresource,
            now: &now,
        };
        let crd = crate::openapi::custom_schema(resource);
        let merged = managed::apply(
            schema_of(resource, crd.as_ref()),
            scope_of(resource, subresource),
            old.as_ref(),
            &config,
            &writer,
            force,
        )
        .map_err(|err| match err {
            ApplyError::Conflicts(conflicts) => {
                ApiError::apply_conflict(ApplyError::conflict_message(&conflicts), &conflicts)
            }
            ApplyError::Schema(message) => ApiError::bad_request(format!(
                "failed to create typed patch object ({}; {}, Kind={}): {message}",
                match &target.namespace {
                    Some(namespace) => format!("{namespace}/{name}"),
                    None => format!("/{name}"),
                },
                resource.api_version(),
                resource.kind
            )),
        })?;
        let (Some(object), Some(current)) = (old, current) else {
            return self
                .create_object(target, query, merged, warnings, None)
                .await;
        };
        let current = Read {
            key: current.key,
            revision: current.mod_revision,
            object,
            cached: false,
        };
        let mut updated = merge_update(resource, &current.object, merged.clone(), subresource);
        updated["metadata"]["managedFields"] = merged["metadata"]["managedFields"].clone();
        if updated["metadata"]["managedFields"].is_null()
            && let Some(metadata) = updated["metadata"].as_object_mut()
        {
            metadata.remove("managedFields");
        }
        fill_defaults(resource, &mut updated);
        if resource.kind == "CustomResourceDefinition" {
            crate::crd::validate(&mut updated)?;
        }
        let errors = crate::openapi::custom_errors(resource, &updated);
        if !errors.is_empty() {
            return Err(ApiError::invalid(
                resource.kind,
                resource.group,
                name,
                errors,
            ));
        }
        let written = self.write_update(target, query, &current, updated).await?;
        Ok(with_warnings(written, &warnings))
    }

    /// Writes `spec.replicas` from a Scale, answering the new Scale.
    async fn write_scale(
        &self,
        target: &Target,
        query: &Query,
        manager: &str,
        current: &KeyValue,
        scale: Value,
    ) -> Result<Response, ApiError> {
        let resource = target.resource;
        let name = target.name.as_deref().unwrap_or_default();
        let version = scale["metadata"]["resourceVersion"].as_str().unwrap_or("");
        if !version.is_empty() && version != current.mod_revision.to_string() {
            return Err(ApiError::conflict(resource.plural, resource.group, name));
        }
        let replicas = match &scale["spec"]["replicas"] {
            Value::Number(n)
                if n.as_i64()
                    .is_some_and(|n| (0..=i64::from(i32::MAX)).contains(&n)) =>
            {
                n.clone()
            }
            other => {
                return Err(ApiError::invalid(
                    "Scale",
                    "autoscaling",
                    name,
                    vec![(
                        "FieldValueInvalid".into(),
                        "spec.replicas".into(),
                        format!("Invalid value: {other}: must be greater than or equal to 0"),
                    )],
                ));
            }
        };
        let old = decode(resource, current)?;
        let mut updated = old.clone();
        set_path(
            &mut updated,
            &scale_paths(resource).spec_replicas,
            Value::Number(replicas),
        );
        let mut updated = merge_update(resource, &old, updated, None);
        record(resource, Some(&old), &mut updated, manager, Some("scale"));
        if dry_run(query) {
            return Ok(json_response(StatusCode::OK, &scale_of(resource, &updated)));
        }
        match self
            .store
            .update(
                &current.key,
                encode(resource, &updated),
                current.mod_revision,
                put_options(resource),
            )
            .await
        {
            Ok(kv) => Ok(json_response(
                StatusCode::OK,
                &scale_of(resource, &decode(resource, &kv)?),
            )),
            Err(err) => Err(write_error(resource, name, err)),
        }
    }

    async fn write_update(
        &self,
        target: &Target,
        query: &Query,
        current: &Read,
        updated: Value,
    ) -> Result<Response, ApiError> {
        let resource = target.resource;
        let name = target.name.as_deref().unwrap_or_default();
        let old = &current.object;
        // A write that changes nothing is not made: the resourceVersion
        // stays. The cache's copy may be old: the store's says.
        if same_but_version(old, &updated) {
            if current.cached {
                return Err(ApiError::conflict(resource.plural, resource.group, name));
            }
            return Ok(json_response(StatusCode::OK, old));
        }
        if dry_run(query) {
            return Ok(json_response(StatusCode::OK, &updated));
        }
        // The last finalizer of an object being deleted is gone: it goes.
        if !updated["metadata"]["deletionTimestamp"].is_null() && !has_finalizers(&updated) {
            return match self
                .store
                .delete(&current.key, Some(current.revision))
                .await
            {
                Ok(deleted) => {
                    self.deleted(resource, &updated).await;
                    let mut gone = updated;
                    gone["metadata"]["resourceVersion"] = json!(deleted.revision.to_string());
                    Ok(json_response(StatusCode::OK, &gone))
                }
                Err(err) => Err(write_error(resource, name, err)),
            };
        }
        let mut updated = updated;
        if resource.group.is_empty() && resource.plural == "nodes" {
            check_pod_cidrs(old, &updated, name)?;
        }
        let (claimed, before) = if is_service(resource) {
            let (was, now) = (&old["spec"]["clusterIP"], &updated["spec"]["clusterIP"]);
            if was.as_str().is_some_and(|ip| !ip.is_empty()) && was != now {
                return Err(ApiError::invalid(
                    resource.kind,
                    resource.group,
                    name,
                    vec![(
                        "FieldValueInvalid".into(),
                        "spec.clusterIPs[0]".into(),
                        format!("Invalid value: {}: may not change once set", json!([now])),
                    )],
                ));
            }
            let before = allocate::held_by(old);
            let claimed = allocate::node_ports(self.store.as_ref(), &before, &mut updated).await?;
            (claimed, before)
        } else {
            (Vec::new(), Vec::new())
        };
        let written = self
            .store
            .update(
                &current.key,
                encode(resource, &updated),
                current.revision,
                put_options(resource),
            )
            .await;
        match &written {
            Ok(_) => {
                // What the old Service held and the new one does not.
                let after = allocate::held_by(&updated);
                let freed: Vec<String> =
                    before.into_iter().filter(|k| !after.contains(k)).collect();
                allocate::release(self.store.as_ref(), &freed).await;
            }
            Err(_) => allocate::release(self.store.as_ref(), &claimed).await,
        }
        match written {
            Ok(kv) => Ok(json_response(
                StatusCode::OK,
                &as_written(resource, updated, &kv)?,
            )),
            Err(err) => Err(write_error(resource, name, err)),
        }
    }

    pub async fn delete(
        &self,
        target: &Target,
        query: &Query,
        body: &[u8],
    ) -> Result<Response, ApiError> {
        let options = delete_options(body)?;
        let current = self.load(target).await?;
        let object = self
            .delete_object(target.resource, current, &options, query)
            .await?;
        Ok(json_response(StatusCode::OK, &object))
    }

    /// DELETE of a collection: every object matching the selectors is
    /// deleted as a DELETE of it would; answers the list of them.
    pub async fn delete_collection(
        &self,
        target: &Target,
        query: &Query,
        body: &[u8],
    ) -> Result<Response, ApiError> {
        let resource = target.resource;
        let options = delete_options(body)?;
        let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let fields = FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        check_fields(resource, &fields)?;
        let listed = self
            .store
            .range(RangeRequest {
                prefix: collection_prefix(resource, target.namespace.as_deref()),
                ..RangeRequest::default()
            })
            .await
            .map_err(from_store)?;
        let mut chosen = Vec::new();
        for kv in listed.kvs {
            if matches(&decode(resource, &kv)?, &labels, &fields) {
                chosen.push(kv);
            }
        }
        // Several at once: each waits for its own durable write.
        let results: Vec<Result<Value, ApiError>> = futures::stream::iter(chosen)
            .map(|kv| self.delete_object(resource, kv, &options, query))
            .buffered(DELETE_COLLECTION_WORKERS)
            .collect()
            .await;
        let mut items = Vec::new();
        for result in results {
            match result {
                Ok(mut deleted) => {
                    if let Some(deleted) = deleted.as_object_mut() {
                        deleted.remove("kind");
                        deleted.remove("apiVersion");
                    }
                    items.push(deleted);
                }
                // Gone meanwhile, or refused by the caller's preconditions.
                Err(err)
                    if err.code == StatusCode::NOT_FOUND || err.code == StatusCode::CONFLICT => {}
                Err(err) => return Err(err),
            }
        }
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "kind": format!("{}List", resource.kind),
                "apiVersion": resource.api_version(),
                "metadata": {"resourceVersion": listed.revision.to_string()},
                "items": items,
            }),
        ))
    }

    /// Deletes one object as upstream does: preconditions, dry run, a
    /// grace period for pods on a node (marked, then removed by their
    /// node's agent), finalizers (marked, removed with the last one), else
    /// gone at once. Answers the object as it is left (or was).
    ///
    /// A write that lands between the read and the deletion (a kubelet's
    /// status update, say) does not fail it: as upstream's
    /// GuaranteedUpdate, it reads the object again and retries. Only the
    /// caller's preconditions answer 409.
    pub(crate) async fn delete_object(
        &self,
        resource: &'static Resource,
        mut current: KeyValue,
        options: &Value,
        query: &Query,
    ) -> Result<Value, ApiError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let err = match self
                .delete_once(resource, current.clone(), options, query)
                .await
            {
                Err(err) if err.code == StatusCode::CONFLICT && attempts < DELETE_ATTEMPTS => err,
                other => return other,
            };
            let fresh = self
                .store
                .get(&current.key, None)
                .await
                .map_err(from_store)?
                .kv;
            match fresh {
                // Unchanged: the caller's preconditions refused it.
                Some(fresh) if fresh.mod_revision == current.mod_revision => return Err(err),
                Some(fresh) => current = fresh,
                None => {
                    let object = decode(resource, &current)?;
                    let name = object["metadata"]["name"].as_str().unwrap_or("");
                    return Err(ApiError::not_found(resource.plural, resource.group, name));
                }
            }
        }
    }

    async fn delete_once(
        &self,
        resource: &'static Resource,
        current: KeyValue,
        options: &Value,
        query: &Query,
    ) -> Result<Value, ApiError> {
        let object = decode(resource, &current)?;
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if is_namespace(resource) && IMMORTAL_NAMESPACES.contains(&name.as_str()) {
            return Err(ApiError::forbidden(
                "namespaces",
                "",
                &name,
                "this namespace may not be deleted",
            ));
        }
        if let Some(uid) = options["preconditions"]["uid"].as_str()
            && object["metadata"]["uid"].as_str() != Some(uid)
        {
            return Err(ApiError::conflict(resource.plural, resource.group, &name));
        }
        if let Some(version) = options["preconditions"]["resourceVersion"].as_str()
            && version != current.mod_revision.to_string()
        {
            return Err(ApiError::conflict(resource.plural, resource.group, &name));
        }
        let dry = dry_run(query)
            || options["dryRun"]
                .as_array()
                .is_some_and(|d| d.iter().any(|v| v == "All"));
        if dry {
            return Ok(object);
        }
        let mut object = object;
        let policy = propagation(resource, options, query)?;
        // The garbage collector deletes the dependents first (Foreground)
        // or orphans them (Orphan), then removes its finalizer.
        let collector_asked = set_collector_finalizer(&mut object, policy);
        let grace = grace_period(resource, &object, options);
        let marked_grace = object["metadata"]["deletionGracePeriodSeconds"].as_i64();
        let marked = !object["metadata"]["deletionTimestamp"].is_null();
        // Two-phase deletion: marked now, gone once the node's agent has
        // stopped the pod (it deletes with grace 0) or the last finalizer
        // is removed (see write_update).
        if grace > 0 || has_finalizers(&object) {
            let shortened = !marked || marked_grace.is_some_and(|g| g > grace);
            if !shortened && !collector_asked {
                return Ok(object);
            }
            if grace > 0 || !marked || collector_asked {
                let mut updated = object;
                if shortened {
                    updated["metadata"]["deletionTimestamp"] =
                        json!(timestamp(now_seconds() + grace));
                    updated["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                }
                if is_namespace(resource) {
                    updated["status"]["phase"] = json!("Terminating");
                }
                return match self
                    .store
                    .update(
                        &current.key,
                        encode(resource, &updated),
                        current.mod_revision,
                        PutOptions::default(),
                    )
                    .await
                {
                    Ok(kv) => decode(resource, &kv),
                    Err(err) => Err(write_error(resource, &name, err)),
                };
            }
            if has_finalizers(&object) {
                return Ok(object);
            }
        }
        match self
            .store
            .delete(&current.key, Some(current.mod_revision))
            .await
        {
            Ok(_) => {
                self.deleted(resource, &object).await;
                Ok(object)
            }
            Err(err) => Err(write_error(resource, &name, err)),
        }
    }

    pub async fn list(
        &self,
        target: &Target,
        headers: &HeaderMap,
        query: &Query,
    ) -> Result<Response, ApiError> {
        let resource = target.resource;
        let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let fields = FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        check_fields(resource, &fields)?;
        let limit: usize = match query.get("limit") {
            Some(limit) => limit
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {limit:?}")))?,
            None => 0,
        };
        let prefix = collection_prefix(resource, target.namespace.as_deref());
        let requested = query.get("resourceVersion").map_or("", String::as_str);
        let exact = check_version_match(query, requested)?;
        let continuing = query.get("continue").is_some_and(|t| !t.is_empty());
        // As upstream's cacher: exact revisions and continuations are read
        // from the store, the rest from the watch cache.
        let legacy_exact = limit > 0 && !requested.is_empty() && requested != "0";
        if !continuing && !exact && !legacy_exact {
            let cache = self.caches.get(resource).await.map_err(from_store)?;
            let wanted = match requested {
                "" => self.store.current_revision().await.map_err(from_store)?,
                "0" => 0,
                rv => parse_version(rv)?,
            };
            if cache.wait_for(wanted).await {
                let snapshot = cache.list(&prefix, &labels, &fields, limit);
                let mut metadata = json!({"resourceVersion": snapshot.revision.to_string()});
                if let Some(key) = &snapshot.next {
                    metadata["continue"] = json!(encode_continue(key, snapshot.revision));
                }
                return Ok(list_response(
                    resource,
                    headers,
                    query,
                    metadata,
                    &snapshot.items,
                ));
            }
            if !requested.is_empty() {
                return Err(ApiError::timeout(
                    format!(
                        "Too large resource version: {wanted}, current: {}",
                        cache.revision()
                    ),
                    1,
                ));
            }
            // The cache is behind the store: read the store itself.
        }
        let (mut start_key, mut revision) = (None, None);
        if let Some(token) = query.get("continue").filter(|t| !t.is_empty()) {
            let (key, rv) = decode_continue(token)?;
            start_key = Some(key);
            revision = Some(rv);
        } else if exact || legacy_exact {
            revision = Some(parse_version(requested)?);
        }
        let mut items = Vec::new();
        let mut next = None;
        loop {
            let chunk = self
                .store
                .range(RangeRequest {
                    prefix: prefix.clone(),
                    start_key: start_key.clone(),
                    limit: if limit == 0 { 0 } else { LIST_CHUNK.max(limit) },
                    revision,
                })
                .await
                .map_err(|e| match e {
                    tug_store::Error::Compacted { .. } if query.contains_key("continue") => ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result. \
                         You can start a new list without the continue parameter, or use the continue token \
                         in this response to retrieve the remainder of the results. Continuing with the provided \
                         token results in an inconsistent list - objects that were created, modified, or deleted \
                         between the time the first chunk was returned and now may show up in the list.",
                    ),
                    other => from_store(other),
                })?;
            revision = Some(chunk.revision);
            for kv in &chunk.kvs {
                let object = decode(resource, kv)?;
                if matches(&object, &labels, &fields) {
                    items.push(object);
                    if limit != 0 && items.len() == limit {
                        next = Some(format!("{}\0", kv.key));
                        break;
                    }
                }
            }
            if next.is_some() || !chunk.more {
                // A full page on the last key of the store has nothing after it.
                if next.is_some()
                    && !chunk.more
                    && chunk.kvs.last().map(|kv| format!("{}\0", kv.key)) == next
                {
                    next = None;
                }
                break;
            }
            start_key = chunk.next_key();
        }
        let revision = revision.unwrap_or_default();
        let mut metadata = json!({"resourceVersion": revision.to_string()});
        if let Some(key) = &next {
            metadata["continue"] = json!(encode_continue(key, revision));
        }
        if table_wanted(headers) {
            return Ok(table_response(resource, query, metadata, &items));
        }
        if table::metadata_wanted(accept(headers)) {
            return Ok(metadata_list(metadata, items.into_iter()));
        }
        for item in &mut items {
            if let Some(item) = item.as_object_mut() {
                item.remove("kind");
                item.remove("apiVersion");
            }
        }
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "kind": format!("{}List", resource.kind),
                "apiVersion": resource.api_version(),
                "metadata": metadata,
                "items": items,
            }),
        ))
    }

    pub async fn watch(
        self: Arc<Self>,
        target: &Target,
        headers: &HeaderMap,
        query: &Query,
    ) -> Result<Response, ApiError> {
        let resource = target.resource;
        let permit = self
            .watches
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::too_many_requests())?;
        let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let fields = FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        check_fields(resource, &fields)?;
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let as_table = table::wanted(accept);
        let as_metadata = table::metadata_wanted(accept);
        let bookmarks = query
            .get("allowWatchBookmarks")
            .is_some_and(|v| v == "true");
        let timeout = query
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .map_or(WATCH_TIMEOUT_DEFAULT, Duration::from_secs);
        let prefix = collection_prefix(resource, target.namespace.as_deref());
        let requested = query
            .get("resourceVersion")
            .map(String::as_str)
            .unwrap_or("");
        let send_initial = match query.get("sendInitialEvents").map(String::as_str) {
            Some("true") => true,
            Some(_) => false,
            None => requested.is_empty() || requested == "0",
        };
        let streaming = query.get("sendInitialEvents").map(String::as_str) == Some("true");
        check_watch_options(query, bookmarks)?;

        // From the watch cache, unless the revision asked for is older
        // than the history it keeps.
        let cache = self.caches.get(resource).await.map_err(from_store)?;
        let wanted = match requested {
            "" if streaming => self.store.current_revision().await.map_err(from_store)?,
            "" | "0" => 0,
            rv => parse_version(rv)?,
        };
        if !cache.wait_for(wanted).await {
            return Err(ApiError::timeout(
                format!(
                    "Too large resource version: {wanted}, current: {}",
                    cache.revision()
                ),
                1,
            ));
        }
        let from = (!send_initial).then_some(wanted);
        let options = StreamOptions {
            labels,
            fields,
            as_table,
            as_metadata,
            bookmarks,
            streaming,
            timeout,
        };
        if let Some(subscription) = cache.subscribe(&prefix, from) {
            return Ok(stream_cached(resource, subscription, options, permit));
        }

        // Older than the cache's history: the changes after it from the
        // store's own history, until the cache's history reaches back to
        // what was sent; the cache serves the rest.
        let after = wanted;
        let deadline = tokio::time::Instant::now() + timeout;
        let store_options = WatchOptions {
            progress_interval: bookmarks.then_some(BOOKMARK_INTERVAL),
        };
        let watch = self.store.watch(&prefix, after, store_options).await;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
        let line = move |kind: &str, object: Value| -> Bytes {
            let object = if as_table && kind != "BOOKMARK" && kind != "ERROR" {
                table::table(
                    resource,
                    &[object],
                    json!({}),
                    Include::Metadata,
                    now_seconds(),
                )
            } else if as_metadata && kind != "ERROR" {
                table::partial_metadata(&object)
            } else {
                object
            };
            let mut line =
                serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
            line.push(b'\n');
            Bytes::from(line)
        };
        let mut watch = match watch {
            Ok(watch) => watch,
            Err(tug_store::Error::Compacted { requested }) => {
                // As upstream: a 200 stream carrying one ERROR event.
                let status =
                    ApiError::expired(format!("too old resource version: {requested} ({after})"))
                        .status();
                let _ = tx.try_send(line("ERROR", status));
                drop(tx);
                return Ok(stream_response(rx));
            }
            Err(err) => return Err(from_store(err)),
        };
        let bookmark = move |revision: Revision| {
            json!({
                "kind": resource.kind,
                "apiVersion": resource.api_version(),
                "metadata": {"resourceVersion": revision.to_string()},
            })
        };
        tokio::spawn(async move {
            let _permit = permit;
            let (labels, fields) = (&options.labels, &options.fields);
            let sleep = tokio::time::sleep_until(deadline);
            tokio::pin!(sleep);
            let mut sent = after;
            loop {
                if let Some(subscription) = cache.subscribe(&prefix, Some(sent)) {
                    drop(watch);
                    send_cached(&tx, resource, subscription, &options, deadline).await;
                    return;
                }
                let message = tokio::select! {
                    _ = &mut sleep => return,
                    _ = tx.closed() => return,
                    message = watch.next() => message,
                };
                let events = match message {
                    Some(Ok(WatchMessage::Events(events))) => events,
                    Some(Ok(WatchMessage::Progress(revision))) => {
                        if bookmarks && tx.send(line("BOOKMARK", bookmark(revision))).await.is_err()
                        {
                            return;
                        }
                        continue;
                    }
                    Some(Err(tug_store::Error::Compacted { requested }))
                    | Some(Err(tug_store::Error::WatchTooSlow {
                        last_revision: requested,
                    })) => {
                        let status =
                            ApiError::expired(format!("too old resource version: {requested}"))
                                .status();
                        let _ = tx.send(line("ERROR", status)).await;
                        return;
                    }
                    Some(Err(_)) | None => return,
                };
                if let Some(last) = events.iter().last() {
                    sent = last.revision();
                }
                for event in events.iter() {
                    let now = match event.kind {
                        EventKind::Put => decode(resource, &event.kv).ok(),
                        EventKind::Delete => None,
                    };
                    let before = event
                        .prev
                        .as_ref()
                        .and_then(|prev| decode(resource, prev).ok());
                    let now_matches = now.as_ref().is_some_and(|o| matches(o, labels, fields));
                    let before_matches =
                        before.as_ref().is_some_and(|o| matches(o, labels, fields));
                    let sent = match (before_matches, now_matches) {
                        (false, true) => Some(("ADDED", now)),
                        (true, true) => Some(("MODIFIED", now)),
                        (true, false) => {
                            // Deleted, or changed so that it no longer matches:
                            // the last state, at the revision of the change.
                            let mut last = now.or(before).unwrap_or_default();
                            last["metadata"]["resourceVersion"] =
                                json!(event.revision().to_string());
                            Some(("DELETED", Some(last)))
                        }
                        (false, false) => None,
                    };
                    if let Some((kind, Some(object))) = sent
                        && tx.send(line(kind, object)).await.is_err()
                    {
                        return;
                    }
                }
            }
        });
        Ok(stream_response(rx))
    }
}

fn accept(headers: &HeaderMap) -> &str {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn table_wanted(headers: &HeaderMap) -> bool {
    table::wanted(accept(headers))
}

/// A PartialObjectMetadataList of `items`, for metadata-only lists.
fn metadata_list(metadata: Value, items: impl Iterator<Item = Value>) -> Response {
    let items: Vec<Value> = items.map(|item| table::partial_metadata(&item)).collect();
    json_response(
        StatusCode::OK,
        &json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": metadata,
            "items": items,
        }),
    )
}

/// A list as a Table, with the object (or its metadata) in each row as
/// `includeObject` asks.
fn table_response(
    resource: &Resource,
    query: &Query,
    metadata: Value,
    items: &[Value],
) -> Response {
    let include = Include::parse(query.get("includeObject").map(String::as_str));
    json_response(
        StatusCode::OK,
        &table::table(resource, items, metadata, include, now_seconds()),
    )
}

/// A list served from the watch cache: the items' bytes as encoded once,
/// or a Table of them.
fn list_response(
    resource: &Resource,
    headers: &HeaderMap,
    query: &Query,
    metadata: Value,
    items: &[Arc<Cached>],
) -> Response {
    if table_wanted(headers) {
        let values: Vec<Value> = items.iter().map(|item| item.value()).collect();
        return table_response(resource, query, metadata, &values);
    }
    if table::metadata_wanted(accept(headers)) {
        return metadata_list(metadata, items.iter().map(|item| item.value()));
    }
    let head = json!({
        "kind": format!("{}List", resource.kind),
        "apiVersion": resource.api_version(),
        "metadata": metadata,
    })
    .to_string();
    let size: usize = items.iter().map(|item| item.json.len() + 1).sum();
    let mut body = Vec::with_capacity(head.len() + size + 16);
    body.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
    body.extend_from_slice(b",\"items\":[");
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            body.push(b',');
        }
        for part in item.item() {
            body.extend_from_slice(part);
        }
    }
    body.extend_from_slice(b"]}");
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn parse_version(rv: &str) -> Result<Revision, ApiError> {
    rv.parse::<Revision>()
        .ok()
        .filter(|rv| *rv >= 0)
        .ok_or_else(|| ApiError::bad_request(format!("invalid resource version {rv:?}")))
}

/// Checks `resourceVersionMatch` as upstream's list options validation
/// does; answers whether it asks for an exact revision.
fn check_version_match(query: &Query, requested: &str) -> Result<bool, ApiError> {
    let invalid = |value: &str, message: &str| {
        ApiError::invalid(
            "ListOptions",
            "meta.k8s.io",
            "",
            vec![(
                "FieldValueForbidden".into(),
                "resourceVersionMatch".into(),
                format!("{value}{message}"),
            )],
        )
    };
    match query.get("resourceVersionMatch").map(String::as_str) {
        None | Some("") => Ok(false),
        Some(_) if requested.is_empty() => Err(invalid(
            "",
            "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
        )),
        Some("Exact") if requested == "0" => Err(invalid(
            "",
            "Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
        )),
        Some("Exact") => Ok(true),
        Some("NotOlderThan") => Ok(false),
        Some(other) => Err(ApiError::invalid(
            "ListOptions",
            "meta.k8s.io",
            "",
            vec![(
                "FieldValueNotSupported".into(),
                "resourceVersionMatch".into(),
                format!(
                    "Unsupported value: {other:?}: supported values: \"Exact\", \"NotOlderThan\", \"\""
                ),
            )],
        )),
    }
}

fn string_list(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The attributes an access review asks about.
fn review_attributes(spec: &Value) -> Attributes {
    let text = |value: &Value, field: &str| value[field].as_str().unwrap_or("").to_string();
    match spec.get("resourceAttributes").filter(|r| r.is_object()) {
        Some(r) => Attributes {
            verb: text(r, "verb"),
            resource: Some(ResourceAttributes {
                group: text(r, "group"),
                version: text(r, "version"),
                resource: text(r, "resource"),
                subresource: text(r, "subresource"),
                namespace: text(r, "namespace"),
                name: text(r, "name"),
            }),
            path: String::new(),
        },
        None => {
            let n = &spec["nonResourceAttributes"];
            Attributes {
                verb: text(n, "verb"),
                resource: None,
                path: text(n, "path"),
            }
        }
    }
}

/// What a watch asked for, beyond where it starts.
struct StreamOptions {
    labels: LabelSelector,
    fields: FieldSelector,
    as_table: bool,
    /// Metadata only (PartialObjectMetadata).
    as_metadata: bool,
    bookmarks: bool,
    /// `sendInitialEvents=true`: the initial events end with a bookmark
    /// that says so.
    streaming: bool,
    timeout: Duration,
}

/// How a change looks to a watcher with these selectors, if it sees it.
fn event_type(
    change: &Change,
    labels: &LabelSelector,
    fields: &FieldSelector,
) -> Option<&'static str> {
    let now = !change.deleted && change.object.matches(labels, fields);
    let before = match &change.prev {
        Some(prev) => prev.matches(labels, fields),
        None => change.deleted && change.object.matches(labels, fields),
    };
    match (before, now) {
        (false, true) => Some("ADDED"),
        (true, true) => Some("MODIFIED"),
        (true, false) => Some("DELETED"),
        (false, false) => None,
    }
}

/// Serves a watch from the watch cache.
fn stream_cached(
    resource: &'static Resource,
    subscription: crate::cache::Subscription,
    options: StreamOptions,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let deadline = tokio::time::Instant::now() + options.timeout;
    tokio::spawn(async move {
        let _permit = permit;
        send_cached(&tx, resource, subscription, &options, deadline).await;
    });
    stream_response(rx)
}

/// Sends a watch's events from the watch cache until `deadline`, the
/// client's going, or its falling too far behind.
async fn send_cached(
    tx: &tokio::sync::mpsc::Sender<Bytes>,
    resource: &'static Resource,
    subscription: crate::cache::Subscription,
    options: &StreamOptions,
    deadline: tokio::time::Instant,
) {
    let line = move |kind: &str, object: &Cached| -> Bytes {
        if options.as_table {
            let table = table::table(
                resource,
                &[object.value()],
                json!({}),
                Include::Metadata,
                now_seconds(),
            );
            let mut line =
                serde_json::to_vec(&json!({"type": kind, "object": table})).unwrap_or_default();
            line.push(b'\n');
            return Bytes::from(line);
        }
        let partial;
        let encoded: &[u8] = if options.as_metadata {
            partial = object.partial_metadata();
            &partial
        } else {
            &object.json
        };
        let mut line = Vec::with_capacity(encoded.len() + 32);
        line.extend_from_slice(b"{\"type\":\"");
        line.extend_from_slice(kind.as_bytes());
        line.extend_from_slice(b"\",\"object\":");
        line.extend_from_slice(encoded);
        line.extend_from_slice(b"}\n");
        Bytes::from(line)
    };
    let bookmark = move |revision: Revision, initial_end: bool| -> Bytes {
        let mut metadata = json!({"resourceVersion": revision.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({
            "kind": resource.kind,
            "apiVersion": resource.api_version(),
            "metadata": metadata,
        });
        let mut line =
            serde_json::to_vec(&json!({"type": "BOOKMARK", "object": object})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    };
    let crate::cache::Subscription {
        prefix,
        revision,
        initial,
        backlog,
        mut batches,
    } = subscription;
    let deadline = tokio::time::sleep_until(deadline);
    tokio::pin!(deadline);
    let (labels, fields) = (&options.labels, &options.fields);
    for object in &initial {
        if object.matches(labels, fields) && tx.send(line("ADDED", object)).await.is_err() {
            return;
        }
    }
    if options.streaming && tx.send(bookmark(revision, true)).await.is_err() {
        return;
    }
    let mut sent = revision;
    let mut last_bookmark = tokio::time::Instant::now();
    let mut pending: Vec<Arc<Change>> = backlog;
    loop {
        for change in pending.drain(..) {
            if change.revision <= sent {
                continue;
            }
            sent = change.revision;
            if let Some(kind) = event_type(&change, labels, fields)
                && tx.send(line(kind, &change.object)).await.is_err()
            {
                return;
            }
        }
        let batch = tokio::select! {
            _ = &mut deadline => return,
            _ = tx.closed() => return,
            batch = batches.recv() => batch,
        };
        match batch {
            Ok(batch) => match batch.as_ref() {
                Batch::Changes(changes) => pending.extend(
                    changes
                        .iter()
                        .filter(|change| change.object.key.starts_with(&prefix))
                        .cloned(),
                ),
                Batch::Progress(revision) => {
                    sent = sent.max(*revision);
                    if options.bookmarks && last_bookmark.elapsed() >= BOOKMARK_INTERVAL {
                        last_bookmark = tokio::time::Instant::now();
                        if tx.send(bookmark(sent, false)).await.is_err() {
                            return;
                        }
                    }
                }
            },
            // Fell too far behind, or the cache stopped: the client
            // watches again from the last revision it saw.
            Err(_) => return,
        }
    }
}

/// The watch options upstream's validation refuses.
fn check_watch_options(query: &Query, bookmarks: bool) -> Result<(), ApiError> {
    let forbidden = |field: &str, message: &str| {
        ApiError::invalid(
            "ListOptions",
            "meta.k8s.io",
            "",
            vec![(
                "FieldValueForbidden".into(),
                field.into(),
                format!("Forbidden: {message}"),
            )],
        )
    };
    let version_match = query.get("resourceVersionMatch").map_or("", String::as_str);
    if query.contains_key("sendInitialEvents") {
        if version_match != "NotOlderThan" {
            return Err(forbidden(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        if !bookmarks {
            return Err(forbidden(
                "allowWatchBookmarks",
                "sendInitialEvents requires setting allowWatchBookmarks to true",
            ));
        }
    } else if !version_match.is_empty() {
        return Err(forbidden(
            "resourceVersionMatch",
            "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        ));
    }
    Ok(())
}

/// Drops the fields the kind does not declare, as upstream's decoding
/// does, and says so as `fieldValidation` asks: a warning each (Warn, the
/// default), nothing (Ignore), or a 400 naming them all (Strict).
fn unknown_fields(
    resource: &Resource,
    query: &Query,
    object: &mut Value,
) -> Result<Vec<String>, ApiError> {
    let warnings = prune_and_warn(resource, query, object)?;
    let errors = crate::openapi::custom_errors(resource, object);
    if !errors.is_empty() {
        let name = object["metadata"]["name"].as_str().unwrap_or("");
        return Err(ApiError::invalid(
            resource.kind,
            resource.group,
            name,
            errors,
        ));
    }
    Ok(warnings)
}

fn prune_and_warn(
    resource: &Resource,
    query: &Query,
    object: &mut Value,
) -> Result<Vec<String>, ApiError> {
    let mode = query.get("fieldValidation").map_or("Warn", String::as_str);
    if !matches!(mode, "Ignore" | "Warn" | "Strict") {
        return Err(ApiError::bad_request(format!(
            "fieldValidation must be one of \"Ignore\", \"Warn\" or \"Strict\", not {mode:?}"
        )));
    }
    let unknown = crate::openapi::KindSchemas::get().prune_unknown(resource, object);
    let unknown: Vec<String> = unknown
        .iter()
        .map(|path| format!("unknown field {path:?}"))
        .collect();
    match mode {
        "Strict" if !unknown.is_empty() => Err(ApiError::bad_request(format!(
            "{kind} in version {version:?} cannot be handled as a {kind}: strict decoding error: {}",
            unknown.join(", "),
            kind = resource.kind,
            version = resource.version,
        ))),
        "Warn" => Ok(unknown),
        _ => Ok(Vec::new()),
    }
}

/// Adds each warning as a `Warning: 299 - "..."` header, as upstream.
fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for warning in warnings {
        let value = format!("299 - {}", json!(warning));
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

/// How a deletion treats the object's dependents.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Propagation {
    Background,
    Foreground,
    Orphan,
}

/// The propagation a deletion asks for (DeleteOptions' propagationPolicy
/// or orphanDependents, or the query's), else the resource's default:
/// Background, but Orphan for core/v1 ReplicationControllers, as
/// upstream keeps for compatibility.
fn propagation(
    resource: &Resource,
    options: &Value,
    query: &Query,
) -> Result<Propagation, ApiError> {
    let asked = options["propagationPolicy"]
        .as_str()
        .or(query.get("propagationPolicy").map(String::as_str));
    let orphan = options["orphanDependents"]
        .as_bool()
        .or(query.get("orphanDependents").map(|v| v == "true"));
    match (asked, orphan) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "DeleteOptions",
            "meta.k8s.io",
            "",
            vec![(
                "FieldValueInvalid".into(),
                "propagationPolicy".into(),
                "Invalid value: \"null\": orphanDependents and deletionPropagation cannot be both set".into(),
            )],
        )),
        (Some("Background"), _) => Ok(Propagation::Background),
        (Some("Foreground"), _) => Ok(Propagation::Foreground),
        (Some("Orphan"), _) => Ok(Propagation::Orphan),
        (Some(other), _) => Err(ApiError::invalid(
            "DeleteOptions",
            "meta.k8s.io",
            "",
            vec![(
                "FieldValueNotSupported".into(),
                "propagationPolicy".into(),
                format!(
                    "Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
                ),
            )],
        )),
        (None, Some(true)) => Ok(Propagation::Orphan),
        (None, Some(false)) => Ok(Propagation::Background),
        (None, None) if resource.group.is_empty() && resource.plural == "replicationcontrollers" => {
            Ok(Propagation::Orphan)
        }
        (None, None) => Ok(Propagation::Background),
    }
}

pub(crate) const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
pub(crate) const ORPHAN_FINALIZER: &str = "orphan";

/// Puts the garbage collector's finalizer for `policy` on `object` (and
/// takes the other off); answers whether the finalizers changed.
fn set_collector_finalizer(object: &mut Value, policy: Propagation) -> bool {
    let wanted = match policy {
        Propagation::Foreground => Some(FOREGROUND_FINALIZER),
        Propagation::Orphan => Some(ORPHAN_FINALIZER),
        Propagation::Background => None,
    };
    let Some(wanted) = wanted else {
        return false;
    };
    let other = if wanted == FOREGROUND_FINALIZER {
        ORPHAN_FINALIZER
    } else {
        FOREGROUND_FINALIZER
    };
    let mut finalizers: Vec<Value> = object["metadata"]["finalizers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let before = finalizers.clone();
    finalizers.retain(|f| f != other);
    if !finalizers.iter().any(|f| f == wanted) {
        finalizers.push(json!(wanted));
    }
    if finalizers == before {
        return false;
    }
    object["metadata"]["finalizers"] = json!(finalizers);
    true
}

fn delete_options(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the DeleteOptions are not valid JSON: {e}")))
}

/// Seconds a deleted object has to finish, as upstream's pod strategy
/// says: a pod on a node gets its own terminationGracePeriodSeconds (30 by
/// default) unless the request gives one; a pod on no node, or one that
/// has finished, goes at once. Other objects have none.
fn grace_period(resource: &Resource, object: &Value, options: &Value) -> i64 {
    if !resource.group.is_empty() || resource.plural != "pods" {
        return 0;
    }
    let spec = &object["spec"];
    let phase = object["status"]["phase"].as_str().unwrap_or("");
    if spec["nodeName"].as_str().unwrap_or("").is_empty()
        || phase == "Succeeded"
        || phase == "Failed"
    {
        return 0;
    }
    options["gracePeriodSeconds"]
        .as_i64()
        .or_else(|| spec["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30)
        .max(0)
}

fn stream_response(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Response {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::io::Error>(chunk), rx))
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn encode_continue(key: &str, revision: Revision) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": revision, "start": key});
    base64::engine::general_purpose::STANDARD.encode(token.to_string())
}

fn decode_continue(token: &str) -> Result<(String, Revision), ApiError> {
    let bad = || ApiError::bad_request(format!("invalid continue token {token:?}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(token)
        .map_err(|_| bad())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let key = value["start"].as_str().ok_or_else(bad)?.to_string();
    let revision = value["rv"].as_i64().ok_or_else(bad)?;
    Ok((key, revision))
}

/// A label selector as a string, as `Scale.status.selector` carries it.
fn selector_string(selector: &Value) -> String {
    let labels = selector.get("matchLabels").unwrap_or(selector);
    let mut terms: Vec<String> = labels
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| *k != "matchExpressions")
                .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
                .collect()
        })
        .unwrap_or_default();
    for expression in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = expression["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = expression["values"]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        terms.push(match expression["operator"].as_str() {
            Some("In") => format!("{key} in ({})", values.join(",")),
            Some("NotIn") => format!("{key} notin ({})", values.join(",")),
            Some("Exists") => key.to_string(),
            _ => format!("!{key}"),
        });
    }
    terms.sort();
    terms.join(",")
}

/// The autoscaling/v1 Scale of a workload.
/// Where a kind keeps what its Scale shows: built-in kinds their spec's
/// replicas and selector; custom kinds what their CRD's scale subresource
/// names.
struct ScalePaths {
    spec_replicas: String,
    status_replicas: String,
    selector: Option<String>,
}

fn scale_paths(resource: &Resource) -> ScalePaths {
    match crate::crd::scale(resource) {
        Some(scale) => ScalePaths {
            spec_replicas: scale["specReplicasPath"]
                .as_str()
                .unwrap_or(".spec.replicas")
                .into(),
            status_replicas: scale["statusReplicasPath"]
                .as_str()
                .unwrap_or(".status.replicas")
                .into(),
            selector: scale["labelSelectorPath"].as_str().map(str::to_string),
        },
        None => ScalePaths {
            spec_replicas: ".spec.replicas".into(),
            status_replicas: ".status.replicas".into(),
            selector: None,
        },
    }
}

/// The value at a dotted path (`.spec.replicas`).
fn at_path<'a>(object: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .filter(|part| !part.is_empty())
        .fold(object, |here, part| &here[part])
}

/// Sets the value at a dotted path, making the objects on the way.
fn set_path(object: &mut Value, path: &str, value: Value) {
    let mut here = object;
    for part in path.split('.').filter(|part| !part.is_empty()) {
        here = &mut here[part];
    }
    *here = value;
}

fn scale_of(resource: &Resource, object: &Value) -> Value {
    let metadata = &object["metadata"];
    let paths = scale_paths(resource);
    let selector = match &paths.selector {
        // A custom kind states its selector as a string already.
        Some(path) => at_path(object, path).as_str().unwrap_or("").to_string(),
        None => selector_string(&object["spec"]["selector"]),
    };
    let default_replicas = if paths.selector.is_some() { 0 } else { 1 };
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata["uid"],
            "resourceVersion": metadata["resourceVersion"],
            "creationTimestamp": metadata["creationTimestamp"],
        },
        "spec": {"replicas": at_path(object, &paths.spec_replicas).as_i64().unwrap_or(default_replicas)},
        "status": {
            "replicas": at_path(object, &paths.status_replicas).as_i64().unwrap_or(0),
            "selector": selector,
        },
    })
}

/// A failed write of one object, in the API's words.
/// A new object's status, as upstream's PrepareForCreate leaves it: what
/// the client sent is dropped where the status has its own subresource
/// (its controller writes it there), except a Node's, which its kubelet
/// registers with. Pods, Services and Namespaces get theirs in defaults.
fn reset_status(resource: &Resource, object: &mut Value) {
    if !resource.subresources.contains(&"status") || resource.kind == "Node" {
        return;
    }
    let initial = match (resource.group, resource.plural) {
        ("networking.k8s.io", "ingresses") => json!({"loadBalancer": {}}),
        ("policy", "poddisruptionbudgets") => json!({
            "currentHealthy": 0, "desiredHealthy": 0, "disruptionsAllowed": 0, "expectedPods": 0,
        }),
        ("", "persistentvolumes" | "persistentvolumeclaims") => json!({"phase": "Pending"}),
        ("autoscaling", "horizontalpodautoscalers") => json!({"desiredReplicas": 0}),
        _ if tug_api::registry::is_custom(resource) => {
            if let Some(object) = object.as_object_mut() {
                object.remove("status");
            }
            return;
        }
        _ => json!({}),
    };
    object["status"] = initial;
}

/// Whether two versions of an object differ only in resourceVersion.
fn same_but_version(a: &Value, b: &Value) -> bool {
    // Compared in place, without copies: objects are large.
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    a.len() == b.len()
        && a.iter().all(|(k, v)| match b.get(k) {
            Some(w) if k == "metadata" => same_but_key(v, w, "resourceVersion"),
            Some(w) => v == w,
            None => false,
        })
}

/// Whether two objects are equal but for `key`.
fn same_but_key(a: &Value, b: &Value, key: &str) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    let others = |m: &serde_json::Map<String, Value>| m.keys().filter(|k| *k != key).count();
    others(a) == others(b)
        && a.iter()
            .filter(|(k, _)| *k != key)
            .all(|(k, v)| b.get(k) == Some(v))
}

fn write_error(resource: &Resource, name: &str, err: tug_store::Error) -> ApiError {
    match err {
        tug_store::Error::Conflict { .. } => {
            ApiError::conflict(resource.plural, resource.group, name)
        }
        tug_store::Error::NotFound { .. } => {
            ApiError::not_found(resource.plural, resource.group, name)
        }
        other => from_store(other),
    }
}

/// Events live for an hour, as kube-apiserver's default `--event-ttl`.
pub const EVENT_TTL: Duration = Duration::from_secs(3600);

fn put_options(resource: &Resource) -> PutOptions {
    let event = resource.plural == "events" && matches!(resource.group, "" | "events.k8s.io");
    PutOptions {
        ttl: event.then_some(EVENT_TTL),
    }
}

fn is_service(resource: &Resource) -> bool {
    resource.group.is_empty() && resource.plural == "services"
}

/// Whether something must finish before the object goes: its finalizers,
/// and for a namespace the finalizers of its spec (emptying it).
fn has_finalizers(object: &Value) -> bool {
    let listed = |list: &Value| list.as_array().is_some_and(|f| !f.is_empty());
    listed(&object["metadata"]["finalizers"])
        || (object["kind"] == "Namespace" && listed(&object["spec"]["finalizers"]))
}

/// The namespaces that are never deleted, as upstream's NamespaceLifecycle.
const IMMORTAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

fn is_namespace(resource: &Resource) -> bool {
    resource.group.is_empty() && resource.plural == "namespaces"
}

/// The fields each resource can be selected by, beyond metadata.name and
/// metadata.namespace, as upstream's field label conversions allow.
pub(crate) fn selectable_fields(resource: &Resource) -> &'static [&'static str] {
    match (resource.group, resource.plural) {
        ("", "pods") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "events") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("", "namespaces") => &["status.phase"],
        ("", "nodes") => &["spec.unschedulable"],
        ("", "secrets") => &["type"],
        ("", "replicationcontrollers") | ("apps", "replicasets") => &["status.replicas"],
        ("batch", "jobs") => &["status.successful"],
        _ => &[],
    }
}

fn check_fields(resource: &Resource, fields: &FieldSelector) -> Result<(), ApiError> {
    for field in fields.fields() {
        let supported = matches!(field, "metadata.name" | "metadata.namespace")
            || selectable_fields(resource).contains(&field);
        if !supported {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {field}"
            )));
        }
    }
    Ok(())
}

/// A field's value as field selectors compare it: strings as they are,
/// numbers and booleans printed, a missing field empty. An event's
/// `source` is its source component.
fn field_value(object: &Value, field: &str) -> Option<String> {
    let path = if field == "source" {
        "source.component"
    } else {
        field
    };
    let mut here = object;
    for part in path.split('.') {
        here = here.get(part)?;
    }
    match here {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A field's value as a field selector compares it.
pub(crate) fn selected_field(object: &Value, field: &str) -> Option<String> {
    match field_value(object, field) {
        // Unset booleans read as false, as upstream's conversions do.
        None if field == "spec.unschedulable" || field == "spec.hostNetwork" => {
            Some("false".into())
        }
        value => value,
    }
}

fn matches(object: &Value, labels: &LabelSelector, fields: &FieldSelector) -> bool {
    labels.matches(object["metadata"]["labels"].as_object())
        && fields.matches(|field| selected_field(object, field))
}

/// The manager a write is recorded under, after checking a given
/// `fieldManager` as upstream does (422 on the request's options).
fn field_manager(query: &Query, headers: &HeaderMap, options: &str) -> Result<String, ApiError> {
    let given = query.get("fieldManager").map(String::as_str);
    if let Some(given) = given
        && let Some((reason, message)) = managed::field_manager_problem(given)
    {
        return Err(options_invalid(options, &reason, "fieldManager", message));
    }
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    Ok(managed::manager_name(given, agent))
}

/// 422 about a request's options: `PatchOptions.meta.k8s.io "" is invalid: ...`
fn options_invalid(options: &str, reason: &str, field: &str, message: String) -> ApiError {
    ApiError::invalid(
        options,
        "meta.k8s.io",
        "",
        vec![(reason.into(), field.into(), message)],
    )
}

/// How `resource`'s lists and maps merge; `crd` is a custom kind's schema
/// (`crate::openapi::custom_schema`).
fn schema_of<'a>(resource: &'a Resource, crd: Option<&'a Value>) -> managed::Schema<'a> {
    managed::Schema {
        kind: resource.kind,
        custom: tug_api::registry::is_custom(resource),
        crd,
    }
}

fn scope_of(resource: &Resource, subresource: Option<&str>) -> Scope {
    match subresource {
        Some("status") => Scope::Status,
        _ => Scope::Main {
            has_status: resource.subresources.contains(&"status"),
        },
    }
}

/// Records a create (`old` is `None`) or an update by `manager` in the new
/// object's managedFields. Fields that do not fit the schema leave the
/// object untracked rather than fail the write, as upstream.
fn record(
    resource: &Resource,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: Option<&str>,
) {
    let now = timestamp(now_seconds());
    let writer = Writer {
        manager,
        api_version: &resource.api_version(),
        subresource,
        now: &now,
    };
    let scope = scope_of(resource, subresource);
    let crd = if tug_api::registry::is_custom(resource) {
        crate::openapi::custom_schema(resource)
    } else {
        None
    };
    if managed::record_update(schema_of(resource, crd.as_ref()), scope, old, new, &writer).is_err()
        && let Some(metadata) = new["metadata"].as_object_mut()
    {
        metadata.remove("managedFields");
    }
}

/// Defaults for what an apply left unset (a pruned `replicas` comes back
/// as 1); what is set stays as it is.
fn fill_defaults(resource: &Resource, object: &mut Value) {
    let mut defaulted = object.clone();
    tug_api::defaults::apply(resource.group, resource.plural, &mut defaulted);
    fill_missing(object, &defaulted);
}

fn fill_missing(target: &mut Value, defaulted: &Value) {
    if let (Value::Object(target), Value::Object(defaulted)) = (target, defaulted) {
        for (key, value) in defaulted {
            match target.get_mut(key) {
                Some(existing) => fill_missing(existing, value),
                None => {
                    target.insert(key.clone(), value.clone());
                }
            }
        }
    }
}

/// The object a PUT or PATCH stores: what the system owns comes from `old`;
/// the main resource keeps the old status, the status subresource keeps
/// everything but the status.
fn merge_update(
    resource: &Resource,
    old: &Value,
    mut new: Value,
    subresource: Option<&str>,
) -> Value {
    let has_status = resource.subresources.contains(&"status");
    if subresource == Some("status") {
        let mut updated = old.clone();
        updated["status"] = new["status"].take();
        if tug_api::registry::is_custom(resource) {
            return updated;
        }
        // Built-in kinds keep the metadata the writer sends, as upstream's
        // status strategies do (the Deployment controller records its
        // revision annotation this way), except what the strategy pins:
        // the apps kinds' labels, a pod's owners.
        let pinned: &[&str] = match (resource.group, resource.kind) {
            ("apps", _) => &["labels"],
            ("", "Pod") => &["ownerReferences"],
            _ => &[],
        };
        for field in ["labels", "annotations", "finalizers", "ownerReferences"] {
            if pinned.contains(&field) {
                continue;
            }
            match new["metadata"].get(field) {
                Some(value) if !value.is_null() => updated["metadata"][field] = value.clone(),
                _ => {
                    if let Some(metadata) = updated["metadata"].as_object_mut() {
                        metadata.remove(field);
                    }
                }
            }
        }
        return updated;
    }
    for field in [
        "uid",
        "creationTimestamp",
        "namespace",
        "name",
        "generation",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        match old["metadata"].get(field) {
            Some(value) => new["metadata"][field] = value.clone(),
            None => {
                if let Some(metadata) = new["metadata"].as_object_mut() {
                    metadata.remove(field);
                }
            }
        }
    }
    if is_service(resource) {
        // Allocated at create and immutable since.
        for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if new["spec"].get(field).is_none_or(Value::is_null) && !old["spec"][field].is_null() {
                new["spec"][field] = old["spec"][field].clone();
            }
        }
    }
    if has_status {
        new["status"] = old["status"].clone();
        if new["status"].is_null()
            && let Some(object) = new.as_object_mut()
        {
            object.remove("status");
        }
    }
    if old.get("spec").is_some() && old["spec"] != new["spec"] {
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(0);
        new["metadata"]["generation"] = json!(generation + 1);
    }
    new["kind"] = json!(resource.kind);
    new["apiVersion"] = json!(resource.api_version());
    new
}

/// A node's pod CIDRs, once set, stay (upstream's node validation).
fn check_pod_cidrs(old: &Value, new: &Value, name: &str) -> Result<(), ApiError> {
    let cidrs = |node: &Value| -> Vec<Value> {
        match node["spec"]["podCIDRs"].as_array() {
            Some(list) if !list.is_empty() => list.clone(),
            _ => node["spec"]["podCIDR"]
                .as_str()
                .filter(|c| !c.is_empty())
                .map(|c| vec![json!(c)])
                .unwrap_or_default(),
        }
    };
    let (was, now) = (cidrs(old), cidrs(new));
    if was.is_empty() || was == now {
        return Ok(());
    }
    Err(ApiError::invalid(
        "Node",
        "",
        name,
        vec![(
            "FieldValueForbidden".into(),
            "spec.podCIDRs".into(),
            "Forbidden: node updates may not change podCIDR except from \"\" to valid".into(),
        )],
    ))
}

/// Whether a request may be served for `method` on a collection or an object.
pub fn method_allowed(resource: &Resource, method: &Method, collection: bool) -> bool {
    if !resource.stored {
        return collection && *method == Method::POST;
    }
    if collection {
        matches!(*method, Method::GET | Method::POST | Method::DELETE)
    } else {
        matches!(
            *method,
            Method::GET | Method::PUT | Method::PATCH | Method::DELETE
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tug_api::registry::find;

    #[test]
    fn a_write_that_changes_only_the_resource_version_changes_nothing() {
        let pod = |version: &str, labels: Value| {
            json!({"metadata": {"name": "p", "resourceVersion": version, "labels": labels},
                   "spec": {"nodeName": "n"}})
        };
        let labels = json!({"app": "a"});
        assert!(same_but_version(
            &pod("1", labels.clone()),
            &pod("2", labels.clone())
        ));
        let mut unversioned = pod("1", labels.clone());
        unversioned["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
        assert!(same_but_version(&unversioned, &pod("2", labels.clone())));
        assert!(same_but_version(&pod("2", labels.clone()), &unversioned));
        assert!(!same_but_version(
            &pod("1", labels.clone()),
            &pod("1", json!({"app": "b"}))
        ));
        let mut more = pod("1", labels.clone());
        more["status"] = json!({"phase": "Running"});
        assert!(!same_but_version(&pod("1", labels.clone()), &more));
        assert!(!same_but_version(&more, &pod("1", labels)));
    }

    #[test]
    fn a_nodes_pod_cidr_may_be_set_once() {
        let node = |cidr: Value| json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
        let unset = json!({"spec": {}});
        assert!(check_pod_cidrs(&unset, &node(json!("10.42.0.0/24")), "n").is_ok());
        assert!(
            check_pod_cidrs(
                &node(json!("10.42.0.0/24")),
                &node(json!("10.42.0.0/24")),
                "n"
            )
            .is_ok()
        );
        let changed = check_pod_cidrs(
            &node(json!("10.42.0.0/24")),
            &node(json!("10.42.1.0/24")),
            "n",
        )
        .unwrap_err();
        assert_eq!(changed.code, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            changed
                .message
                .contains("spec.podCIDRs: Forbidden: node updates may not change podCIDR"),
            "{}",
            changed.message
        );
        assert!(check_pod_cidrs(&node(json!("10.42.0.0/24")), &unset, "n").is_err());
    }

    #[tokio::test]
    async fn a_deletion_outlives_a_write_that_lands_after_its_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = tug_store::open(tug_store::Config::Sqlite(tug_store::sqlite::Config {
            path: dir.path().join("state.db"),
        }))
        .await
        .unwrap();
        let api = ApiState {
            store: store.clone(),
            service_cidr: ServiceCidr::parse("10.43.0.0/16").unwrap(),
            watches: Arc::new(tokio::sync::Semaphore::new(1)),
            caches: Caches::new(store.clone()),
        };
        let pods = find("", "v1", "pods").unwrap();
        let pod = json!({"metadata": {"name": "web", "namespace": "default", "uid": "u1"}});
        let key = "/registry/pods/default/web";
        let read = store
            .create(key, encode(pods, &pod), PutOptions::default())
            .await
            .unwrap();
        // A status update lands after the deletion read the object.
        let mut updated = pod.clone();
        updated["status"] = json!({"phase": "Running"});
        store
            .update(
                key,
                encode(pods, &updated),
                read.mod_revision,
                PutOptions::default(),
            )
            .await
            .unwrap();
        let deleted = api
            .delete_object(pods, read.clone(), &json!({}), &Query::new())
            .await
            .unwrap();
        assert_eq!(deleted["status"]["phase"], "Running");
        assert!(store.get(key, None).await.unwrap().kv.is_none());

        // The caller's own precondition still refuses.
        store
            .create(key, encode(pods, &pod), PutOptions::default())
            .await
            .unwrap();
        let current = store.get(key, None).await.unwrap().kv.unwrap();
        let refused = api
            .delete_object(
                pods,
                current,
                &json!({"preconditions": {"uid": "other"}}),
                &Query::new(),
            )
            .await
            .unwrap_err();
        assert_eq!(refused.code, StatusCode::CONFLICT);
    }

    #[test]
    fn scale_carries_replicas_and_the_selector_as_a_string() {
        let deployment = json!({
            "metadata": {"name": "web", "namespace": "default", "resourceVersion": "9"},
            "spec": {"replicas": 3, "selector": {
                "matchLabels": {"tier": "front", "app": "web"},
                "matchExpressions": [{"key": "env", "operator": "In", "values": ["a", "b"]}],
            }},
            "status": {"replicas": 2},
        });
        let scale = scale_of(find("apps", "v1", "deployments").unwrap(), &deployment);
        assert_eq!(scale["spec"]["replicas"], 3);
        assert_eq!(scale["status"]["replicas"], 2);
        assert_eq!(
            scale["status"]["selector"],
            "app=web,env in (a,b),tier=front"
        );
        let rc = json!({"metadata": {"name": "old"}, "spec": {"replicas": 1, "selector": {"app": "old"}}});
        assert_eq!(
            scale_of(find("", "v1", "replicationcontrollers").unwrap(), &rc)["status"]["selector"],
            "app=old"
        );
    }

    #[test]
    fn field_selectors_read_the_fields_upstream_allows() {
        let pods = tug_api::registry::find("", "v1", "pods").unwrap();
        let selector = |text: &str| FieldSelector::parse(text).unwrap();
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let everything = LabelSelector::default();
        assert!(matches(
            &pod,
            &everything,
            &selector("spec.nodeName=n1,status.phase!=Succeeded,status.phase!=Failed")
        ));
        assert!(!matches(&pod, &everything, &selector("spec.nodeName=n2")));
        assert!(matches(
            &pod,
            &everything,
            &selector("spec.hostNetwork=false")
        ));
        assert!(check_fields(pods, &selector("spec.nodeName=n1")).is_ok());
        assert!(check_fields(pods, &selector("spec.containers=x")).is_err());
        let events = tug_api::registry::find("", "v1", "events").unwrap();
        let event = json!({"involvedObject": {"name": "p", "uid": "u"}, "source": {"component": "kubelet"}});
        let describe = selector("involvedObject.name=p,involvedObject.uid=u,source=kubelet");
        assert!(check_fields(events, &describe).is_ok());
        assert!(matches(&event, &everything, &describe));
    }

    #[test]
    fn events_expire_after_an_hour_and_nothing_else_does() {
        let events = tug_api::registry::find("", "v1", "events").unwrap();
        let pods = tug_api::registry::find("", "v1", "pods").unwrap();
        assert_eq!(put_options(events).ttl, Some(Duration::from_secs(3600)));
        assert_eq!(put_options(pods).ttl, None);
    }

    #[test]
    fn names_must_be_dns_subdomains() {
        assert_eq!(name_problem("web-1.example"), None);
        for bad in ["", "Web", "-web", "web-", "a..b", "we_b"] {
            assert!(name_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn continue_tokens_round_trip_and_bad_ones_are_refused() {
        let token = encode_continue("/registry/pods/default/web\0", 42);
        assert_eq!(
            decode_continue(&token).unwrap(),
            ("/registry/pods/default/web\0".to_string(), 42)
        );
        assert_eq!(
            decode_continue("not-a-token").unwrap_err().code,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn an_update_keeps_what_the_system_owns_and_bumps_generation_on_spec_changes() {
        let resource = tug_api::registry::find("apps", "v1", "deployments").unwrap();
        let old = json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1", "creationTimestamp": "2026-11-23T18:00:00Z", "generation": 1},
            "spec": {"replicas": 1},
            "status": {"replicas": 1},
        });
        let new = json!({"metadata": {"name": "web", "uid": "forged"}, "spec": {"replicas": 3}, "status": {"replicas": 9}});
        let updated = merge_update(resource, &old, new, None);
        assert_eq!(updated["metadata"]["uid"], "u1");
        assert_eq!(updated["metadata"]["generation"], 2);
        assert_eq!(updated["status"], json!({"replicas": 1}));
        let status = merge_update(
            resource,
            &old,
            json!({"spec": {"replicas": 5}, "status": {"replicas": 2}}),
            Some("status"),
        );
        assert_eq!(status["spec"], json!({"replicas": 1}));
        assert_eq!(status["status"], json!({"replicas": 2}));
    }

    #[test]
    fn deletions_propagate_as_asked_or_by_the_resources_default() {
        let deployments = tug_api::registry::find("apps", "v1", "deployments").unwrap();
        let rcs = tug_api::registry::find("", "v1", "replicationcontrollers").unwrap();
        let none = Query::new();
        let cases = [
            (json!({}), deployments, Propagation::Background),
            (json!({}), rcs, Propagation::Orphan),
            (
                json!({"propagationPolicy": "Foreground"}),
                deployments,
                Propagation::Foreground,
            ),
            (
                json!({"propagationPolicy": "Background"}),
                rcs,
                Propagation::Background,
            ),
            (
                json!({"orphanDependents": true}),
                deployments,
                Propagation::Orphan,
            ),
        ];
        for (options, resource, want) in cases {
            assert_eq!(
                propagation(resource, &options, &none).unwrap(),
                want,
                "{options}"
            );
        }
        let query: Query = [("propagationPolicy".to_string(), "Orphan".to_string())].into();
        assert_eq!(
            propagation(deployments, &json!({}), &query).unwrap(),
            Propagation::Orphan
        );
        let bad = propagation(
            deployments,
            &json!({"propagationPolicy": "Sideways"}),
            &none,
        )
        .unwrap_err();
        assert_eq!(bad.code, StatusCode::UNPROCESSABLE_ENTITY);
        let both = json!({"propagationPolicy": "Orphan", "orphanDependents": true});
        assert_eq!(
            propagation(deployments, &both, &none).unwrap_err().code,
            StatusCode::UNPROCESSABLE_ENTITY
        );

        let mut object = json!({"metadata": {"finalizers": ["orphan", "x"]}});
        assert!(set_collector_finalizer(
            &mut object,
            Propagation::Foreground
        ));
        assert_eq!(
            object["metadata"]["finalizers"],
            json!(["x", "foregroundDeletion"])
        );
        assert!(!set_collector_finalizer(
            &mut object,
            Propagation::Foreground
        ));
        assert!(!set_collector_finalizer(
            &mut object,
            Propagation::Background
        ));
    }

    #[test]
    fn a_status_update_keeps_annotations_but_not_what_the_strategy_pins() {
        let deployments = tug_api::registry::find("apps", "v1", "deployments").unwrap();
        let old = json!({
            "metadata": {"name": "web", "uid": "u1", "labels": {"app": "web"}, "generation": 4},
            "spec": {"replicas": 1},
        });
        let new = json!({
            "metadata": {"name": "web", "uid": "forged", "labels": {"app": "other"}, "generation": 9,
                "annotations": {"deployment.kubernetes.io/revision": "2"}},
            "spec": {"replicas": 7},
            "status": {"observedGeneration": 4},
        });
        let updated = merge_update(deployments, &old, new, Some("status"));
        assert_eq!(
            updated["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
            "2"
        );
        assert_eq!(updated["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(updated["metadata"]["uid"], "u1");
        assert_eq!(updated["metadata"]["generation"], 4);
        assert_eq!(updated["spec"], json!({"replicas": 1}));

        let pods = tug_api::registry::find("", "v1", "pods").unwrap();
        let owned =
            json!({"metadata": {"name": "p", "ownerReferences": [{"uid": "rs"}]}, "spec": {}});
        let updated = merge_update(
            pods,
            &owned,
            json!({"metadata": {"name": "p", "labels": {"x": "y"}}, "status": {"phase": "Running"}}),
            Some("status"),
        );
        assert_eq!(
            updated["metadata"]["ownerReferences"],
            json!([{"uid": "rs"}])
        );
        assert_eq!(updated["metadata"]["labels"], json!({"x": "y"}));
    }
}

//! Who is asking (authentication) and may they (authorization): the first
//! two links of the chain authn -> authz -> admission -> strategy -> storage.
//!
//! Authentication reads, in upstream's order, the client certificate (CN
//! the user, O the groups) and then a bearer token: one from the token file
//! (`--token-auth-file`, upstream's CSV) or the node-join token. Every
//! authorization decision goes through [`Authorizer`]; until RBAC exists the
//! chain holds [`AllowAuthenticated`].

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use axum::http::{HeaderMap, Method, header};
use ring::digest;

/// An authenticated user, as `UserInfo` in the API.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl User {
    pub(crate) fn with_groups(name: &str, uid: &str, mut groups: Vec<String>) -> Self {
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        Self {
            name: name.into(),
            uid: uid.into(),
            groups,
        }
    }
}

/// The user a client certificate names: CN the user, O the groups.
pub fn user_from_certificate(der: &[u8]) -> Option<User> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?;
    let groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(User::with_groups(name, "", groups))
}

/// The user of the node-join token: it may register nodes and little else
/// once RBAC exists, like upstream's bootstrap tokens.
pub const NODE_JOIN_USER: &str = "system:bootstrap:tug-node-join";
pub const NODE_JOIN_GROUP: &str = "system:bootstrappers";

/// Bearer tokens and who they are. Tokens are kept only as digests.
#[derive(Default)]
pub struct Tokens {
    users: HashMap<Vec<u8>, User>,
}

fn token_digest(token: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

impl Tokens {
    /// Reads upstream's token file: `token,user,uid[,"group1,group2"]` per
    /// line. Blank lines and lines starting with `#` are skipped.
    pub fn load_file(&mut self, path: &Path) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?;
        self.parse(&text)
            .with_context(|| format!("token file {}", path.display()))
    }

    fn parse(&mut self, text: &str) -> anyhow::Result<()> {
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields = split_csv(line)
                .with_context(|| format!("line {}: unbalanced quotes", number + 1))?;
            if fields.len() < 3 || fields[..3].iter().any(String::is_empty) {
                anyhow::bail!(
                    "line {}: needs at least 3 columns (token, user name, user uid), found {}",
                    number + 1,
                    fields.len()
                );
            }
            let groups = fields
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            self.insert(
                &fields[0],
                User::with_groups(&fields[1], &fields[2], groups),
            );
        }
        Ok(())
    }

    /// The node-join token, which `tug agent --token` presents.
    pub fn add_node_join(&mut self, token: &str) {
        self.insert(
            token,
            User::with_groups(NODE_JOIN_USER, "", vec![NODE_JOIN_GROUP.into()]),
        );
    }

    fn insert(&mut self, token: &str, user: User) {
        self.users.insert(token_digest(token), user);
    }

    pub fn authenticate(&self, token: &str) -> Option<User> {
        self.users.get(&token_digest(token)).cloned()
    }
}

/// One CSV record: commas separate fields, double quotes group them, `""`
/// inside quotes is a quote. `None` when a quote is left open.
fn split_csv(line: &str) -> Option<Vec<String>> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut()?.push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => fields.last_mut()?.push(c),
        }
    }
    (!quoted).then(|| fields.into_iter().map(|f| f.trim().to_string()).collect())
}

/// Every bearer token the server accepts: the static ones and service
/// account tokens.
pub struct Authenticator {
    pub tokens: Tokens,
    pub issuer: crate::serviceaccount::Issuer,
}

impl Authenticator {
    /// The user a bearer token authenticates, if any. A service account
    /// token must name a service account that still exists, with its uid.
    pub async fn token(&self, store: &dyn tug_store::Store, token: &str) -> Option<User> {
        if let Some(user) = self.tokens.authenticate(token) {
            return Some(user);
        }
        if !crate::serviceaccount::is_jwt(token) {
            return None;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let claims =
            self.issuer
                .verify(token, &[crate::serviceaccount::ISSUER.to_string()], now)?;
        let key = format!(
            "/registry/serviceaccounts/{}/{}",
            claims.namespace, claims.name
        );
        let stored = store.get(&key, None).await.ok()?.kv?;
        let account: serde_json::Value = serde_json::from_slice(&stored.value).ok()?;
        if account["metadata"]["uid"].as_str() != Some(claims.uid.as_str()) {
            return None;
        }
        Some(User::with_groups(
            &format!("system:serviceaccount:{}:{}", claims.namespace, claims.name),
            &claims.uid,
            vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{}", claims.namespace),
            ],
        ))
    }
}

/// The bearer token of a request, if it carries one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// What a request asks to do, as upstream's authorizer attributes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    /// `None` for a non-resource request such as `/api` or `/openapi/v3`.
    pub resource: Option<ResourceAttributes>,
    pub path: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourceAttributes {
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
}

/// The verb of a request, as upstream names it.
pub fn verb(method: &Method, collection: bool, watch: bool) -> &'static str {
    match *method {
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD if collection => "list",
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if collection => "deletecollection",
        Method::DELETE => "delete",
        _ => "",
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Denied, with the reason said to the user (may be empty).
    Deny(String),
}

/// Decides whether a user may do what a request asks. RBAC implements it
/// in its own issue; a chain of authorizers will too.
pub trait Authorizer: Send + Sync {
    fn authorize(&self, user: &User, attributes: &Attributes) -> Decision;

    /// What a user may do in a namespace, for SelfSubjectRulesReview:
    /// (resource rules, non-resource rules, incomplete).
    fn rules(&self, user: &User, namespace: &str) -> (serde_json::Value, serde_json::Value, bool);
}

/// Every authenticated user may do everything.
pub struct AllowAuthenticated;

impl Authorizer for AllowAuthenticated {
    fn authorize(&self, user: &User, _: &Attributes) -> Decision {
        if user.groups.iter().any(|g| g == "system:authenticated") {
            Decision::Allow
        } else {
            Decision::Deny(String::new())
        }
    }

    fn rules(&self, _: &User, _: &str) -> (serde_json::Value, serde_json::Value, bool) {
        (
            serde_json::json!([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]),
            serde_json::json!([{"verbs": ["*"], "nonResourceURLs": ["*"]}]),
            false,
        )
    }
}

/// Upstream's words for a denial: `User "u" cannot list resource "pods" in
/// API group "" in the namespace "default"`, then `: reason` if any.
pub fn forbidden_reason(user: &User, attributes: &Attributes, reason: &str) -> String {
    let mut message = match &attributes.resource {
        None => format!(
            "User {:?} cannot {} path {:?}",
            user.name, attributes.verb, attributes.path
        ),
        Some(r) => {
            let resource = if r.subresource.is_empty() {
                r.resource.clone()
            } else {
                format!("{}/{}", r.resource, r.subresource)
            };
            let scope = if r.namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace {:?}", r.namespace)
            };
            format!(
                "User {:?} cannot {} resource {:?} in API group {:?} {scope}",
                user.name, attributes.verb, resource, r.group
            )
        }
    };
    if !reason.is_empty() {
        message.push_str(": ");
        message.push_str(reason);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_file_is_upstreams_csv() {
        let mut tokens = Tokens::default();
        tokens
            .parse(
                "# comment\n\
                 abc,alice,1001\n\
                 \n\
                 def,bob,1002,\"dev, ops\"\n",
            )
            .unwrap();
        let alice = tokens.authenticate("abc").unwrap();
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.uid, "1001");
        assert_eq!(alice.groups, ["system:authenticated"]);
        let bob = tokens.authenticate("def").unwrap();
        assert_eq!(bob.groups, ["dev", "ops", "system:authenticated"]);
        assert!(tokens.authenticate("abd").is_none());

        let err = Tokens::default().parse("abc,alice\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("line 1: needs at least 3 columns"),
            "{err:#}"
        );
        assert!(Tokens::default().parse("abc,\"alice,1\n").is_err());
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer  tok ".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some("tok"));
        headers.insert(header::AUTHORIZATION, "Basic dXNlcg==".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
    }

    #[test]
    fn denials_are_worded_as_upstream() {
        let user = User::with_groups("alice", "", vec![]);
        let mut attributes = Attributes {
            verb: "list".into(),
            resource: Some(ResourceAttributes {
                resource: "pods".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            path: "/api/v1/namespaces/default/pods".into(),
        };
        assert_eq!(
            forbidden_reason(&user, &attributes, ""),
            r#"User "alice" cannot list resource "pods" in API group "" in the namespace "default""#
        );
        let resource = attributes.resource.as_mut().unwrap();
        resource.namespace.clear();
        resource.group = "apps".into();
        resource.resource = "deployments".into();
        resource.subresource = "scale".into();
        attributes.verb = "update".into();
        assert_eq!(
            forbidden_reason(&user, &attributes, "no RBAC policy matched"),
            r#"User "alice" cannot update resource "deployments/scale" in API group "apps" at the cluster scope: no RBAC policy matched"#
        );
        attributes.resource = None;
        attributes.path = "/metrics".into();
        attributes.verb = "get".into();
        assert_eq!(
            forbidden_reason(&user, &attributes, ""),
            r#"User "alice" cannot get path "/metrics""#
        );
    }

    #[test]
    fn verbs_follow_method_and_shape() {
        assert_eq!(verb(&Method::GET, true, true), "watch");
        assert_eq!(verb(&Method::GET, true, false), "list");
        assert_eq!(verb(&Method::GET, false, false), "get");
        assert_eq!(verb(&Method::DELETE, true, false), "deletecollection");
        assert_eq!(verb(&Method::PATCH, false, false), "patch");
    }
}

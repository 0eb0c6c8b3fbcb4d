//! Service account tokens: JWTs that `serviceaccounts/{name}/token`
//! issues (TokenRequest, `kubectl create token`) and that authenticate as
//! `system:serviceaccount:{namespace}:{name}`.
//!
//! Tokens are signed with ES256 by a key made on first start
//! (`<data-dir>/server/tls/service.key`); their claims are upstream's: iss,
//! sub, aud, exp, iat, nbf, jti and the `kubernetes.io` claim naming the
//! namespace and service account (name and uid). A token authenticates
//! while it is unexpired, for one of the API server's audiences, and while
//! its service account exists with the same uid.

use std::path::Path;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

/// Who issues the tokens, as upstream's default `--service-account-issuer`.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Shortest and default token lifetimes, as upstream.
pub const EXPIRATION_MIN_SECONDS: i64 = 600;
pub const EXPIRATION_DEFAULT_SECONDS: i64 = 3600;

/// The service account a token names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

pub struct Issuer {
    key: EcdsaKeyPair,
    key_id: String,
    rng: SystemRandom,
}

impl Issuer {
    /// The signing key in `dir`, made (mode 0600) if missing.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("service.key");
        let rng = SystemRandom::new();
        let pkcs8 = match std::fs::read(&path) {
            Ok(pkcs8) => pkcs8,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let pkcs8 =
                    EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                        .map_err(|_| {
                            anyhow::anyhow!("generating the service account key failed")
                        })?;
                crate::pki::write_private(&path, pkcs8.as_ref(), 0o600)?;
                pkcs8.as_ref().to_vec()
            }
            Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
        };
        let key =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
                .map_err(|_| anyhow::anyhow!("{} is not an ECDSA P-256 key", path.display()))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, key.public_key().as_ref());
        Ok(Self {
            key_id: URL_SAFE_NO_PAD.encode(digest.as_ref()),
            key,
            rng,
        })
    }

    /// A signed token for a service account, for `audiences`, valid from
    /// `now` for `seconds`.
    pub fn issue(
        &self,
        account: &Claims,
        audiences: &[String],
        now: i64,
        seconds: i64,
        bound: Option<Value>,
    ) -> anyhow::Result<String> {
        let header = json!({"alg": "ES256", "kid": self.key_id});
        let mut kubernetes = json!({
            "namespace": account.namespace,
            "serviceaccount": {"name": account.name, "uid": account.uid},
        });
        if let Some(bound) = bound
            && let Some(kind) = bound["kind"].as_str()
        {
            kubernetes[kind.to_lowercase()] = json!({"name": bound["name"], "uid": bound["uid"]});
        }
        let claims = json!({
            "aud": audiences,
            "exp": now + seconds,
            "iat": now,
            "iss": ISSUER,
            "jti": uuid::Uuid::new_v4().to_string(),
            "kubernetes.io": kubernetes,
            "nbf": now,
            "sub": format!("system:serviceaccount:{}:{}", account.namespace, account.name),
        });
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign(&self.rng, signed.as_bytes())
            .map_err(|_| anyhow::anyhow!("signing a token failed"))?;
        Ok(format!(
            "{signed}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }

    /// The service account a token names, if it is one of ours, signed,
    /// current at `now` and for one of `audiences`.
    pub fn verify(&self, token: &str, audiences: &[String], now: i64) -> Option<Claims> {
        let (signed, signature) = token.rsplit_once('.')?;
        let (_, payload) = signed.split_once('.')?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.key.public_key().as_ref(),
        )
        .verify(signed.as_bytes(), &signature)
        .ok()?;
        let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        let current = claims["nbf"].as_i64().is_none_or(|nbf| nbf <= now + 60)
            && claims["exp"].as_i64().is_some_and(|exp| now < exp);
        let ours = claims["iss"] == ISSUER
            && claims["aud"]
                .as_array()?
                .iter()
                .any(|a| audiences.iter().any(|ours| a == ours.as_str()));
        if !current || !ours {
            return None;
        }
        let kubernetes = &claims["kubernetes.io"];
        Some(Claims {
            namespace: kubernetes["namespace"].as_str()?.to_string(),
            name: kubernetes["serviceaccount"]["name"].as_str()?.to_string(),
            uid: kubernetes["serviceaccount"]["uid"].as_str()?.to_string(),
        })
    }
}

/// Whether a bearer token looks like a JWT (three dot-separated parts).
pub fn is_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_until_they_expire_and_only_for_our_audiences() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = Issuer::load_or_create(dir.path()).unwrap();
        let account = Claims {
            namespace: "default".into(),
            name: "robot".into(),
            uid: "u-1".into(),
        };
        let ours = vec![ISSUER.to_string()];
        let token = issuer.issue(&account, &ours, 1_000, 3600, None).unwrap();
        assert!(is_jwt(&token));
        assert_eq!(issuer.verify(&token, &ours, 1_010), Some(account.clone()));
        assert_eq!(issuer.verify(&token, &ours, 4_600), None, "expired");
        assert_eq!(issuer.verify(&token, &["other".into()], 1_010), None);
        // A changed payload breaks the signature.
        let parts: Vec<&str> = token.split('.').collect();
        let forged_claims = URL_SAFE_NO_PAD.encode(
            String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap())
                .unwrap()
                .replace("robot", "admin"),
        );
        let forged = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
        assert_eq!(issuer.verify(&forged, &ours, 1_010), None);
        // The key survives a restart: old tokens stay valid.
        let again = Issuer::load_or_create(dir.path()).unwrap();
        assert_eq!(again.verify(&token, &ours, 1_010), Some(account));
    }
}

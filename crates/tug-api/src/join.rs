//! The node-join token, in k3s's form: `K10<CA hash>::server:<secret>`.
//! The CA hash (SHA-256 of the CA certificate's PEM, hex) lets a joining
//! agent check the server it reaches before it sends the secret; a bare
//! secret is accepted too (the agent then trusts the CA it is shown).

/// The full token for a CA's hash and the secret.
pub fn token(ca_hash: &str, secret: &str) -> String {
    format!("K10{ca_hash}::server:{secret}")
}

/// The CA hash, if the token carries one, and the secret.
pub fn parse(token: &str) -> (Option<&str>, &str) {
    let token = token.trim();
    if let Some(rest) = token.strip_prefix("K10")
        && let Some((hash, credentials)) = rest.split_once("::")
    {
        let secret = credentials
            .split_once(':')
            .map_or(credentials, |(_, secret)| secret);
        return (Some(hash), secret);
    }
    (None, token)
}

/// A kubeconfig for `server`, trusting `ca_pem`, logging in with a client
/// certificate.
pub fn kubeconfig(server: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> String {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - cluster:\n    certificate-authority-data: {}\n    server: {server}\n  name: default\n\
         contexts:\n\
         - context:\n    cluster: default\n    user: default\n  name: default\n\
         current-context: default\n\
         preferences: {{}}\n\
         users:\n\
         - name: default\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        b64(ca_pem),
        b64(cert_pem),
        b64(key_pem),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_and_bare_tokens_give_their_secret() {
        let full = token("abc123", "s3cret");
        assert_eq!(full, "K10abc123::server:s3cret");
        assert_eq!(parse(&full), (Some("abc123"), "s3cret"));
        assert_eq!(parse(" s3cret\n"), (None, "s3cret"));
        assert_eq!(parse("K10abc::s3cret"), (Some("abc"), "s3cret"));
    }
}

//! Clients inside the API server's own process (the scheduler and the
//! controller-manager of `tug server`): each request goes to the router
//! as it is, as the user the client was made for, without TCP, TLS or
//! HTTP framing. Everything else (authorization, admission, limits,
//! watches) is as for any client.

use std::convert::Infallible;

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::http::{HeaderValue, Request, header};
use axum::response::Response;
use bytes::Bytes;
use tower::ServiceExt;

use crate::auth::User;
use crate::server::Identity;

/// The API server's router, for clients in its process.
#[derive(Clone)]
pub struct Loopback(pub(crate) Router);

impl std::fmt::Debug for Loopback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Loopback")
    }
}

impl Loopback {
    /// A service answering requests as `user` in `groups`, each sent with
    /// `user_agent` (field managers come from it).
    pub fn service<B>(
        &self,
        user: &str,
        groups: Vec<String>,
        user_agent: HeaderValue,
    ) -> impl tower::Service<
        Request<B>,
        Response = Response,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let identity = Identity(Some(User::with_groups(user, "", groups)));
        let router = self.0.clone();
        tower::service_fn(move |request: Request<B>| {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(identity.clone());
            request
                .headers_mut()
                .insert(header::USER_AGENT, user_agent.clone());
            router.clone().oneshot(request)
        })
    }
}

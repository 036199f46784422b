//! The router on AWS Lambda.

use axum::Router;

/// Serves `router` as an AWS Lambda function behind a function URL, an API Gateway HTTP API
/// (payload format 2.0) or a REST API (payload format 1.0): each invocation's event becomes
/// an HTTP request through [`lambda_http`], and the answer goes back as the function's
/// response. Returns when the Lambda runtime API stops the function or cannot be reached.
///
/// Build the store and the router before calling it, once per cold start: invocations of one
/// execution environment share them.
///
/// ```no_run
/// # #[cfg(feature = "sqlite")]
/// # async fn demo<C>(accounts: annals::Repository<C::Aggregate, annals::SqliteStore>) -> Result<(), annals::http::lambda_http::Error>
/// # where
/// #     C: annals::TaggedCommand + serde::Serialize,
/// #     C::Aggregate: annals::Handle<C, Services = (), Snapshots = annals::NoSnapshots>,
/// # {
/// let router = annals::http::CommandRoutes::<C, _>::new(accounts).router();
/// annals::http::run_lambda(router).await
/// # }
/// ```
pub async fn run_lambda(router: Router) -> Result<(), lambda_http::Error> {
    lambda_http::run(router).await
}

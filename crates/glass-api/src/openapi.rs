//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::{error, instances, routes, services, system, watch};

#[derive(OpenApi)]
#[openapi(
    info(title = "Glass control API", version = "1", description = "Service registry of Glass. Mutations need `Authorization: Bearer <token>` (the token is in <data-dir>/token) unless Glass runs with --dev. Errors are application/problem+json."),
    paths(instances::register, instances::list, instances::get_one, instances::deregister, instances::heartbeat,
        routes::list, routes::create, routes::get_one, routes::replace, routes::delete, routes::apply,
        services::list, services::get_one, watch::sse, system::health, system::providers, system::openapi),
    components(schemas(error::Problem, glass_model::Registration, glass_model::Instance, glass_model::RawCheck,
        glass_model::Health, glass_model::HealthStatus, glass_snapshot::Member, glass_snapshot::ServiceSummary,
        glass_model::RouteSpec, glass_model::RouteMatch, glass_model::RouteTarget, glass_model::HeaderEdits, glass_model::RawTimeouts)),
    modifiers(&Security)
)]
struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// The OpenAPI document as pretty JSON.
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document always serializes")
}

//! The REST API under `/api/v1`, for automation: the admin token as a bearer token, JSON in and out,
//! errors in one shape (`error.rs`), and an OpenAPI document made from these handlers' annotations.

mod agents;
pub mod dto;
mod events;
pub(crate) mod extract;
mod tasks;

use axum::Router;
use axum::routing::{get, post};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::HttpState;
use super::error::{ApiError, ErrorBody, ErrorDetail};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "docker-agent hub API",
        description = "Agents, their tasks and their events. Send the hub's admin token (`docker-agent hub` prints where it is) as `Authorization: Bearer <token>`."
    ),
    paths(
        agents::list,
        agents::create,
        agents::get_agent,
        agents::start,
        agents::stop,
        agents::restart,
        agents::destroy,
        agents::history,
        tasks::submit,
        tasks::list_for_agent,
        tasks::get_task,
        tasks::output,
        tasks::cancel,
        agents::profiles,
        events::events,
    ),
    components(schemas(
        ErrorBody,
        ErrorDetail,
        dto::Agent,
        dto::Resources,
        dto::Health,
        dto::CreateAgent,
        dto::Destroyed,
        dto::Task,
        dto::Profile,
        dto::Profiles,
        dto::Event,
        dto::LiveEvent,
        tasks::OutputStream,
        crate::task::json::TaskRequest,
    )),
    modifiers(&AdminToken),
    security(("admin_token" = []))
)]
pub struct ApiDoc;

struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document, with this build's version.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}

pub fn router() -> Router<HttpState> {
    Router::new()
        .route("/openapi.json", get(|| async { axum::Json(openapi()) }))
        .route("/agents", get(agents::list).post(agents::create))
        .route(
            "/agents/{name}",
            get(agents::get_agent).delete(agents::destroy),
        )
        .route("/agents/{name}/start", post(agents::start))
        .route("/agents/{name}/stop", post(agents::stop))
        .route("/agents/{name}/restart", post(agents::restart))
        .route("/agents/{name}/events", get(agents::history))
        .route(
            "/agents/{name}/tasks",
            get(tasks::list_for_agent).post(tasks::submit),
        )
        .route("/tasks/{id}", get(tasks::get_task))
        .route("/tasks/{id}/output", get(tasks::output))
        .route("/tasks/{id}/cancel", post(tasks::cancel))
        .route("/profiles", get(agents::profiles))
        .route("/events", get(events::events))
        .fallback(|| async { ApiError::not_found("no such API endpoint") })
        .layer(axum::extract::DefaultBodyLimit::max(extract::BODY_LIMIT))
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_lists_every_route_with_its_schemas() {
        let doc = serde_json::to_value(super::openapi()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for path in [
            "/api/v1/agents",
            "/api/v1/agents/{name}",
            "/api/v1/agents/{name}/tasks",
            "/api/v1/tasks/{id}/output",
            "/api/v1/events",
            "/api/v1/profiles",
        ] {
            assert!(
                paths.contains_key(path),
                "{path} missing from {:?}",
                paths.keys()
            );
        }
        assert!(doc["components"]["schemas"]["Agent"].is_object());
        assert!(doc["components"]["securitySchemes"]["admin_token"].is_object());
    }

    /// A reference to a schema that was never registered makes the document unusable for generated
    /// clients and for schemathesis (which found the first one).
    #[test]
    fn every_reference_resolves() {
        fn refs<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
            match v {
                serde_json::Value::Object(map) => {
                    if let Some(serde_json::Value::String(r)) = map.get("$ref") {
                        out.push(r);
                    }
                    map.values().for_each(|v| refs(v, out));
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let doc = serde_json::to_value(super::openapi()).unwrap();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 10, "{found:?}");
        for r in found {
            let name = r.strip_prefix("#/components/schemas/").expect(r);
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "{r} does not resolve"
            );
        }
    }
}

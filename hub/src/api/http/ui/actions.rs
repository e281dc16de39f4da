//! The dashboard's forms (POST): login and logout, agent start/stop/restart/destroy, run a command,
//! create an agent, cancel a task. Each checks the login's CSRF token first, then answers with a
//! redirect (303) to the page that shows the result.

use std::collections::BTreeMap;

use askama::Template;
use askama_web::WebTemplate;
use axum::Extension;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::pages::{CreatePage, Page, error_page};
use crate::api::http::auth::{self, Secure, WebUser};
use crate::api::http::creates::Settled;
use crate::api::http::error::status_of;
use crate::api::http::{HttpState, detached};
use crate::create::CreateRequest;

#[derive(Template, WebTemplate)]
#[template(path = "login.html")]
pub struct LoginPage {
    csrf: String,
    next: String,
    error: Option<String>,
    /// Shown to this host only (plaintext is loopback-only): the path names the operator's account.
    token_path: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

fn login_page(
    state: &HttpState,
    secure: Secure,
    next: &str,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    // Login CSRF: the form's token must match a cookie set with it (double submit), so another site
    // cannot log a browser into this hub.
    let csrf = crate::credentials::new_token();
    let cookie = auth::cookie(
        &state.auth.login_cookie_name(),
        Some(&csrf),
        std::time::Duration::from_secs(3600),
        secure,
    );
    let page = LoginPage {
        csrf,
        next: auth::safe_next(Some(next)).to_string(),
        error,
        token_path: (!secure.0).then(|| {
            state
                .core
                .settings
                .data_dir
                .join(crate::datadir::ADMIN_TOKEN_FILE)
                .display()
                .to_string()
        }),
    };
    (status, [(header::SET_COOKIE, cookie)], page).into_response()
}

pub async fn login_form(
    State(state): State<HttpState>,
    Extension(secure): Extension<Secure>,
    Query(q): Query<LoginQuery>,
) -> Response {
    login_page(
        &state,
        secure,
        q.next.as_deref().unwrap_or("/"),
        None,
        StatusCode::OK,
    )
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: Option<String>,
    csrf: Option<String>,
    next: Option<String>,
}

pub async fn login(
    State(state): State<HttpState>,
    Extension(secure): Extension<Secure>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = auth::safe_next(form.next.as_deref()).to_string();
    let expected = auth::cookie_value(&headers, &state.auth.login_cookie_name()).unwrap_or("");
    if !form
        .csrf
        .as_deref()
        .is_some_and(|c| auth::csrf_matches(c, expected))
    {
        tracing::warn!("refused a dashboard login: missing or wrong CSRF token");
        return login_page(
            &state,
            secure,
            &next,
            Some("The form expired or did not come from this page; try again.".into()),
            StatusCode::FORBIDDEN,
        );
    }
    let token = form.token.unwrap_or_default();
    if !state.auth.is_admin_token(token.trim()) {
        tracing::warn!("refused a dashboard login: wrong admin token");
        return login_page(
            &state,
            secure,
            &next,
            Some("That is not this hub's admin token.".into()),
            StatusCode::UNAUTHORIZED,
        );
    }
    let login = match state.auth.open_login() {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let mut response = Redirect::to(&next).into_response();
    let h = response.headers_mut();
    h.append(
        header::SET_COOKIE,
        state.auth.login_cookie(Some(&login), secure),
    );
    h.append(
        header::SET_COOKIE,
        auth::cookie(
            &state.auth.login_cookie_name(),
            None,
            std::time::Duration::ZERO,
            secure,
        ),
    );
    response
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

pub async fn logout(
    user: WebUser,
    State(state): State<HttpState>,
    Extension(secure): Extension<Secure>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(r) = user.check_csrf(form.csrf.as_deref()) {
        return r.into_response();
    }
    if let Err(e) = state.auth.close_login(&user.login) {
        return e.into_response();
    }
    (
        [(header::SET_COOKIE, state.auth.login_cookie(None, secure))],
        Redirect::to("/login"),
    )
        .into_response()
}

fn back_to_agent(name: &str, notice: &str) -> Response {
    Redirect::to(&format!(
        "/agents/{}?notice={}",
        auth::urlencode(name),
        auth::urlencode(notice)
    ))
    .into_response()
}

/// Start, stop or restart, from the agent page's buttons.
pub async fn agent_action(
    user: WebUser,
    headers: HeaderMap,
    State(state): State<HttpState>,
    Path((name, action)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(r) = user.check_csrf(form.csrf.as_deref()) {
        return r.into_response();
    }
    let core = state.core.clone();
    let n = name.clone();
    let act = action.clone();
    let result = detached(async move {
        match act.as_str() {
            "start" => core.start_agent(&n).await.map(|_| "started"),
            "stop" => core.stop_agent(&n, None).await.map(|_| "stopped"),
            "restart" => core.restart_agent(&n, None).await.map(|_| "restarted"),
            _ => Err(crate::error::HubError::InvalidArgument(format!(
                "unknown action {act:?}"
            ))),
        }
    })
    .await;
    match result {
        Ok(done) => back_to_agent(&name, done),
        Err(e) => {
            let page = Page::new(&headers, &user, format!("{name}: {action}"), "fleet");
            let (kind, message) = e.public();
            error_page(
                page,
                status_of(kind),
                format!("could not {action} {name}: {message}"),
            )
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct DestroyForm {
    csrf: Option<String>,
    purge: Option<String>,
}

pub async fn destroy(
    user: WebUser,
    headers: HeaderMap,
    State(state): State<HttpState>,
    Path(name): Path<String>,
    Form(form): Form<DestroyForm>,
) -> Response {
    if let Err(r) = user.check_csrf(form.csrf.as_deref()) {
        return r.into_response();
    }
    let purge = form.purge.is_some_and(|p| p == "true" || p == "on");
    let core = state.core.clone();
    let n = name.clone();
    match detached(async move { core.destroy_agent(&n, purge).await }).await {
        Ok(_) => Redirect::to("/").into_response(),
        Err(e) => {
            let page = Page::new(&headers, &user, format!("Destroy {name}"), "fleet");
            let (kind, message) = e.public();
            error_page(
                page,
                status_of(kind),
                format!("could not destroy {name}: {message}"),
            )
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct RunForm {
    csrf: Option<String>,
    command: Option<String>,
}

pub async fn run(
    user: WebUser,
    headers: HeaderMap,
    State(state): State<HttpState>,
    Path(name): Path<String>,
    Form(form): Form<RunForm>,
) -> Response {
    if let Err(r) = user.check_csrf(form.csrf.as_deref()) {
        return r.into_response();
    }
    let command = form.command.unwrap_or_default();
    let page = || Page::new(&headers, &user, format!("{name}: run"), "fleet");
    if command.trim().is_empty() {
        return error_page(page(), StatusCode::BAD_REQUEST, "the command is empty");
    }
    let agent = match state.core.agent(&name) {
        Ok(a) => a,
        Err(e) => return error_page(page(), StatusCode::NOT_FOUND, e.public().1),
    };
    let spec = docker_agent_proto::v1::TaskSpec {
        shell: command,
        kind: "exec".into(),
        ..Default::default()
    };
    match state.core.submit_task(&agent, spec).await {
        Ok(task) => Redirect::to(&format!("/tasks/{}", task.id)).into_response(),
        Err(e) => {
            let (kind, message) = e.public();
            error_page(page(), status_of(kind), message)
        }
    }
}

pub async fn cancel_task(
    user: WebUser,
    headers: HeaderMap,
    State(state): State<HttpState>,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(r) = user.check_csrf(form.csrf.as_deref()) {
        return r.into_response();
    }
    match state.core.cancel_task(&id).await {
        Ok(_) => Redirect::to(&format!("/tasks/{id}")).into_response(),
        Err(e) => {
            let page = Page::new(&headers, &user, "Cancel", "fleet");
            let (kind, message) = e.public();
            error_page(page, status_of(kind), message)
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct CreateForm {
    csrf: Option<String>,
    name: Option<String>,
    profile: Option<String>,
    env: Option<String>,
}

/// `KEY=VALUE` lines (blank lines skipped) into a map, or the first bad line.
pub fn parse_env(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut env = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        match line.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                env.insert(k.trim().to_string(), v.to_string());
            }
            _ => {
                return Err(format!(
                    "environment line {}: expected KEY=VALUE, got {line:?}",
                    i + 1
                ));
            }
        }
    }
    Ok(env)
}

pub async fn create(
    user: WebUser,
    headers: HeaderMap,
    State(state): State<HttpState>,
    Form(form): Form<CreateForm>,
) -> Response {
    if let Err(r) = user.check_csrf(form.csrf.as_deref()) {
        return r.into_response();
    }
    let name = form.name.unwrap_or_default().trim().to_string();
    let profile = form.profile.unwrap_or_default();
    let env_text = form.env.unwrap_or_default();
    let refill = |error: String, status: StatusCode| {
        let page = Page::new(&headers, &user, "New agent", "create");
        let mut p = CreatePage::new(page, &state);
        p.error = Some(error);
        p.name = name.clone();
        p.profile = profile.clone();
        p.env = env_text.clone();
        (status, p).into_response()
    };
    let env = match parse_env(&env_text) {
        Ok(env) => env,
        Err(e) => return refill(e, StatusCode::BAD_REQUEST),
    };
    let req = CreateRequest {
        name: name.clone(),
        profile: profile.clone(),
        env,
        ready_timeout: None,
        from_snapshot: None,
        allow_docker_socket: false,
        group: None,
    };
    let done = state.creates.start(state.core.clone(), req);
    match state.creates.settle(&state.core, &name, done).await {
        Settled::Failed(e) => refill(e.public().1, StatusCode::BAD_REQUEST),
        Settled::Exists(_) | Settled::Ready(_) => {
            Redirect::to(&format!("/agents/{}", auth::urlencode(&name))).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_lines_parse_and_bad_ones_are_named() {
        let env = parse_env("A=1\n\nB = x=y\r\n").unwrap();
        assert_eq!(env.get("A").map(String::as_str), Some("1"));
        assert_eq!(env.get("B").map(String::as_str), Some(" x=y"));
        let err = parse_env("A=1\nnope").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
    }
}

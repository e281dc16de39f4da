//! Who may use the HTTP side: the admin token as a bearer token for `/api/v1`, and for the dashboard a
//! login that trades the same token for a login cookie (HttpOnly, SameSite=Strict, Secure over TLS)
//! whose CSRF token every form and the terminal's WebSocket must carry.

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::HttpState;
use super::error::ApiError;
use crate::credentials;
use crate::store::{Store, now_ms};

/// How long a dashboard login lasts.
pub const LOGIN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Set on the router that serves TLS connections, so cookies can be marked `Secure` there.
#[derive(Debug, Clone, Copy)]
pub struct Secure(pub bool);

#[derive(Debug)]
pub struct Auth {
    admin_hash: Vec<u8>,
    /// Per hub, so two hubs on one host (different ports, same cookie jar) do not log each other out.
    cookie: String,
    store: Store,
    /// A login unused this long has ended (`hub --web-idle`); zero: no bound.
    idle: Duration,
}

impl Auth {
    pub fn new(admin_token: &str, hub_id: &str, store: Store, idle: Duration) -> Self {
        let short: String = hub_id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(12)
            .collect();
        Self {
            admin_hash: credentials::hash_token(admin_token),
            cookie: format!("docker_agent_{short}"),
            store,
            idle,
        }
    }

    pub fn is_admin_token(&self, token: &str) -> bool {
        credentials::token_matches(token, &self.admin_hash)
    }

    pub fn login_cookie_name(&self) -> String {
        format!("{}_login", self.cookie)
    }

    /// Opens a login; returns the cookie's value.
    pub fn open_login(&self) -> Result<String, ApiError> {
        let id = credentials::new_token();
        let csrf = credentials::new_token();
        self.store.insert_login(
            &credentials::hash_token(&id),
            &csrf,
            now_ms() + LOGIN_TTL.as_millis() as i64,
        )?;
        Ok(id)
    }

    pub fn close_login(&self, id: &str) -> Result<(), ApiError> {
        self.store.delete_login(&credentials::hash_token(id))?;
        Ok(())
    }

    /// `Set-Cookie` for a login (or, with `None`, one that removes it).
    pub fn login_cookie(&self, value: Option<&str>, secure: Secure) -> HeaderValue {
        cookie(&self.cookie, value, LOGIN_TTL, secure)
    }

    fn user(&self, headers: &HeaderMap) -> Option<WebUser> {
        let id = cookie_value(headers, &self.cookie)?;
        let idle_ms = i64::try_from(self.idle.as_millis()).unwrap_or(i64::MAX);
        let login = self
            .store
            .login(&credentials::hash_token(id), idle_ms)
            .ok()??;
        Some(WebUser {
            login: id.to_string(),
            csrf: login.csrf,
        })
    }
}

/// Builds a `Set-Cookie` header value; `None` expires the cookie.
pub fn cookie(name: &str, value: Option<&str>, ttl: Duration, secure: Secure) -> HeaderValue {
    let (value, max_age) = match value {
        Some(v) => (v, ttl.as_secs()),
        None => ("", 0),
    };
    let secure = if secure.0 { "; Secure" } else { "" };
    // Names and values are ours (hex tokens), so the header is always valid.
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The value of cookie `name` in the request, if sent.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Compares a presented CSRF token with the expected one in constant time.
pub fn csrf_matches(presented: &str, expected: &str) -> bool {
    !expected.is_empty()
        && credentials::token_matches(presented, &credentials::hash_token(expected))
}

/// An API caller that presented the admin token.
#[derive(Debug)]
pub struct Admin;

impl FromRequestParts<HttpState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> Result<Self, ApiError> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(credentials::bearer);
        // Nested routers see a shortened path; the log names the one the client asked for.
        let path = parts
            .extensions
            .get::<axum::extract::OriginalUri>()
            .map_or_else(|| parts.uri.path().to_string(), |u| u.path().to_string());
        match presented {
            Some(token) if state.auth.is_admin_token(token) => Ok(Admin),
            Some(_) => {
                tracing::warn!(%path, "refused an API request: wrong admin token");
                Err(ApiError::unauthenticated())
            }
            None => {
                tracing::warn!(%path, "refused an API request: no admin token");
                Err(ApiError::unauthenticated())
            }
        }
    }
}

/// A logged-in dashboard user.
#[derive(Debug, Clone)]
pub struct WebUser {
    pub login: String,
    pub csrf: String,
}

impl WebUser {
    /// Refuses a state-changing request whose form did not carry this login's CSRF token.
    pub fn check_csrf(&self, presented: Option<&str>) -> Result<(), CsrfRefused> {
        if presented.is_some_and(|p| csrf_matches(p, &self.csrf)) {
            Ok(())
        } else {
            tracing::warn!("refused a dashboard request: missing or wrong CSRF token");
            Err(CsrfRefused)
        }
    }
}

/// A form without the login's CSRF token: 403.
#[derive(Debug)]
pub struct CsrfRefused;

impl IntoResponse for CsrfRefused {
    fn into_response(self) -> Response {
        (
            axum::http::StatusCode::FORBIDDEN,
            "missing or wrong CSRF token: reload the page and try again",
        )
            .into_response()
    }
}

impl FromRequestParts<HttpState> for WebUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> Result<Self, Response> {
        if let Some(user) = state.auth.user(&parts.headers) {
            return Ok(user);
        }
        // Pages send the browser to the login form and back; anything else (forms, live streams,
        // the terminal) just fails.
        if parts.method == axum::http::Method::GET && !parts.uri.path().starts_with("/ui/") {
            let next = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let target = format!("/login?next={}", urlencode(next));
            return Err(Redirect::to(&target).into_response());
        }
        Err((
            axum::http::StatusCode::UNAUTHORIZED,
            "not logged in (or the session expired): log in again",
        )
            .into_response())
    }
}

/// Percent-encodes everything but unreserved characters.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Where to go after login: only a path on this site (never `//host` or `https://…`).
pub fn safe_next(next: Option<&str>) -> &str {
    match next {
        // Browsers drop tabs and newlines inside URLs, so `/\t/evil.example` would become
        // `//evil.example`: only visible ASCII is accepted.
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && n.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            n
        }
        _ => "/",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_http_only_strict_and_secure_over_tls() {
        let c = cookie("s", Some("abc"), LOGIN_TTL, Secure(true));
        let c = c.to_str().unwrap();
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        let gone = cookie("s", None, LOGIN_TTL, Secure(false));
        assert!(gone.to_str().unwrap().contains("Max-Age=0"));
    }

    #[test]
    fn cookie_values_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; docker_agent_x=tok; b=2"),
        );
        assert_eq!(cookie_value(&h, "docker_agent_x"), Some("tok"));
        assert_eq!(cookie_value(&h, "docker_agent"), None);
    }

    #[test]
    fn logins_and_csrf() {
        let store = Store::open_in_memory().unwrap();
        let auth = Auth::new("admintoken", "hub-1234", store, Duration::ZERO);
        assert!(auth.is_admin_token("admintoken"));
        assert!(!auth.is_admin_token("admintokem"));
        let id = auth.open_login().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("docker_agent_hub1234={id}")).unwrap(),
        );
        let user = auth.user(&h).expect("logged in");
        assert!(user.check_csrf(Some(&user.csrf)).is_ok());
        assert!(user.check_csrf(Some("nope")).is_err());
        assert!(user.check_csrf(None).is_err());
        auth.close_login(&id).unwrap();
        assert!(auth.user(&h).is_none());
    }

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/agents/a")), "/agents/a");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(None), "/");
        assert_eq!(safe_next(Some("/\t/evil.example")), "/");
        assert_eq!(safe_next(Some("/\n/evil.example")), "/");
        assert_eq!(safe_next(Some("/ok?x=1")), "/ok?x=1");
    }
}

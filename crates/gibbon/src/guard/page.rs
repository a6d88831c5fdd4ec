//! The reviewer web page: plain HTML and a little JavaScript, no build step.
//!
//! `GET /review` needs a reviewer: a valid session cookie (see [`super::session`]) or bearer
//! token; without one it answers 401 with the sign-in form. The form POSTs the token to
//! `/review/login`, which answers 401 (with the form again) for a wrong token, or opens a session
//! and redirects (303) to `/review` with the session cookie. `POST /review/logout` ends the
//! session. The page's script then calls the reviewer API with the cookie (the browser sends it;
//! no script can read it) and the CSRF header.
use super::server::AppState;
use super::session::{clear_cookie, set_cookie};
use axum::extract::{Form, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;

/// The page skeleton (head, style) around a `{{title}}` and a `{{body}}`.
const LAYOUT: &str = include_str!("layout.html");
/// The queue (table and script).
const REVIEW: &str = include_str!("review.html");
/// The sign-in form, with a `{{message}}`.
const LOGIN: &str = include_str!("login.html");

fn page(title: &str, body: &str) -> String {
    LAYOUT.replace("{{title}}", title).replacen("{{body}}", body, 1)
}

const CSP: &str = "default-src 'self'; img-src 'self' blob:; script-src 'unsafe-inline'; \
                   style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";

/// An HTML answer that no cache keeps and no other page frames.
fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::HeaderName::from_static("content-security-policy"), CSP),
            (header::HeaderName::from_static("x-frame-options"), "DENY"),
        ],
        body,
    )
        .into_response()
}

/// The sign-in form with `message`, as a 401.
fn login_form(message: &str) -> Response {
    html(StatusCode::UNAUTHORIZED, page("sign in", &LOGIN.replace("{{message}}", message)))
}

/// `GET /review`: the page for a signed-in reviewer, else 401 with the sign-in form.
pub async fn review_page(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match st.page_reviewer(&headers) {
        Some(_) => html(StatusCode::OK, page("review queue", REVIEW)),
        None => login_form("Sign in with your reviewer token."),
    }
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

/// `POST /review/login` (form field `token`): a session and a redirect to the page, or 401.
pub async fn login(State(st): State<Arc<AppState>>, Form(form): Form<LoginForm>) -> Response {
    let Some(name) = st.reviewers.holder(&form.token).map(str::to_string) else {
        tracing::warn!("reviewer sign-in refused (wrong token)");
        return login_form("Token refused.");
    };
    let value = match st.sessions.open(&name) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!("no session: the system's random source failed: {e}");
            return html(StatusCode::INTERNAL_SERVER_ERROR, "no random source".into());
        }
    };
    tracing::info!("reviewer {name} signed in");
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, "/review".to_string()), (header::SET_COOKIE, set_cookie(&value))],
    )
        .into_response()
}

/// `POST /review/logout`: ends the session and clears the cookie.
pub async fn logout(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    st.sessions.close(headers.get(header::COOKIE).and_then(|v| v.to_str().ok()));
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, "/review".to_string()), (header::SET_COOKIE, clear_cookie())],
    )
        .into_response()
}

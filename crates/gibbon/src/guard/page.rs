//! The reviewer web page: plain HTML and a little JavaScript, no build step. The page itself
//! carries no data; everything it shows comes from the bearer-protected reviewer API, with the
//! token the reviewer types in (kept in the tab's sessionStorage only).
use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("review.html");

/// `GET /review`.
pub async fn review_page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::HeaderName::from_static("content-security-policy"), "default-src 'self'; img-src 'self' blob:; script-src 'unsafe-inline'; style-src 'unsafe-inline'"),
        ],
        PAGE,
    )
}

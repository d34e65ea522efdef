//! The web pages of `switchboard serve`: a start page, the customer chat, the agent desk and the
//! conversation inspector, with their scripts and stylesheet.
//!
//! It owns nothing but static files: the pages are plain HTML, CSS and JavaScript modules that
//! call the JSON API of this same server with an API key the user enters (kept in the browser's
//! local storage), so they know no more than any other API client. The key design decision is
//! that every file is compiled into the binary with `include_str!`: there is no front-end build
//! step, nothing to install next to the binary, and the Content-Security-Policy sent with every
//! page lets it load and call nothing but this origin.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

/// One embedded file.
struct Asset {
    name: &'static str,
    mime: &'static str,
    body: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The pages, by route.
const PAGES: [(&str, &str); 4] = [
    ("/", include_str!("../assets/index.html")),
    ("/chat", include_str!("../assets/chat.html")),
    ("/desk", include_str!("../assets/desk.html")),
    ("/inspector", include_str!("../assets/inspector.html")),
];

/// The files under `/assets/`.
const ASSETS: [Asset; 6] = [
    Asset { name: "app.css", mime: CSS, body: include_str!("../assets/app.css") },
    Asset { name: "common.js", mime: JS, body: include_str!("../assets/common.js") },
    Asset { name: "index.js", mime: JS, body: include_str!("../assets/index.js") },
    Asset { name: "chat.js", mime: JS, body: include_str!("../assets/chat.js") },
    Asset { name: "desk.js", mime: JS, body: include_str!("../assets/desk.js") },
    Asset { name: "inspector.js", mime: JS, body: include_str!("../assets/inspector.js") },
];

/// Only this origin: no CDN, no inline script, no framing. `data:` images only for the empty
/// favicon that keeps browsers from asking for `/favicon.ico`.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn respond(mime: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // The API key may be in the page's address (`?key=`) until the script removes it.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => respond(a.mime, a.body),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": {"code": "not_found", "message": format!("no asset `{name}`")}})),
        )
            .into_response(),
    }
}

/// The routes of the pages and their assets, for any router state (they use none).
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new().route("/assets/{name}", get(asset));
    for (path, body) in PAGES {
        router = router.route(path, get(move || async move { respond(HTML, body) }));
    }
    router
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    async fn get_path(path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let resp = routes::<()>().oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    /// `/assets/NAME` references in a page or script.
    fn referenced_assets(text: &str) -> Vec<String> {
        text.match_indices("/assets/")
            .map(|(i, _)| {
                let rest = &text[i + "/assets/".len()..];
                rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '_' || *c == '-').collect()
            })
            .collect()
    }

    #[tokio::test]
    async fn every_page_is_served_as_html_with_a_strict_policy() {
        for (path, _) in PAGES {
            let (status, headers, body) = get_path(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(headers[header::CONTENT_TYPE], HTML, "{path}");
            let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"), "{path}: {csp}");
            assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
            assert!(body.starts_with("<!doctype html>"), "{path}");
            assert!(body.contains("/assets/app.css"), "{path} links the stylesheet");
        }
    }

    #[tokio::test]
    async fn every_referenced_asset_exists_with_its_type() {
        let mut seen = 0;
        let texts = PAGES.iter().map(|(_, b)| *b).chain(ASSETS.iter().map(|a| a.body));
        for text in texts {
            for name in referenced_assets(text) {
                let (status, headers, body) = get_path(&format!("/assets/{name}")).await;
                assert_eq!(status, StatusCode::OK, "{name} is referenced but not served");
                let want = if name.ends_with(".css") { CSS } else { JS };
                assert_eq!(headers[header::CONTENT_TYPE], want, "{name}");
                assert!(!body.is_empty());
                seen += 1;
            }
        }
        assert!(seen >= 8, "pages reference their scripts and stylesheet ({seen} references)");
    }

    #[tokio::test]
    async fn unknown_assets_are_404_json() {
        for name in ["nope.js", "..%2Fsrc%2Flib.rs", "app.css.map"] {
            let (status, headers, body) = get_path(&format!("/assets/{name}")).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{name}");
            assert_eq!(headers[header::CONTENT_TYPE], "application/json");
            assert!(body.contains("\"not_found\""), "{body}");
        }
    }

    #[test]
    fn nothing_is_loaded_from_another_origin() {
        let texts = PAGES.iter().map(|(p, b)| (*p, *b)).chain(ASSETS.iter().map(|a| (a.name, a.body)));
        for (name, text) in texts {
            for bad in ["http://", "https://", "//cdn", "<script>", "innerHTML", "eval("] {
                assert!(!text.contains(bad), "{name} contains {bad:?}");
            }
        }
    }
}

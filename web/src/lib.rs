//! Ward's web dashboard: static assets compiled into the binary, so the
//! dashboard works on an air-gapped cluster with nothing else to deploy.
//!
//! The assets are hand-written ES modules and one stylesheet, without a
//! framework or a front-end build: the binary's build needs nothing but
//! Cargo, and what runs in the browser is what is in `assets/`. The pages
//! (`/search`, `/alerts`, `/timeline`, `/rules`) are one application that
//! routes on the client, so each of those paths serves the entry page and
//! a shared link opens the same view.
//!
//! The HTTP layer (`ward-query-api`) serves these at `/` (with a
//! Content-Security-Policy that forbids loading anything from elsewhere);
//! this crate only knows which bytes belong to which path.

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub bytes: &'static [u8],
    pub content_type: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// The entry page, served at every client-side route.
const INDEX_HTML: &[u8] = include_bytes!("../assets/index.html");

/// Client-side routes: each serves the entry page.
const PAGES: &[&str] = &[
    "/",
    "/index.html",
    "/search",
    "/alerts",
    "/timeline",
    "/rules",
];

/// Every other asset, by path.
const FILES: &[(&str, &[u8], &str)] = &[
    ("/assets/app.css", include_bytes!("../assets/app.css"), CSS),
    ("/assets/app.js", include_bytes!("../assets/app.js"), JS),
    ("/assets/api.js", include_bytes!("../assets/api.js"), JS),
    ("/assets/dom.js", include_bytes!("../assets/dom.js"), JS),
    (
        "/assets/search.js",
        include_bytes!("../assets/search.js"),
        JS,
    ),
    (
        "/assets/alerts.js",
        include_bytes!("../assets/alerts.js"),
        JS,
    ),
    (
        "/assets/timeline.js",
        include_bytes!("../assets/timeline.js"),
        JS,
    ),
    ("/assets/rules.js", include_bytes!("../assets/rules.js"), JS),
    (
        "/assets/favicon.svg",
        include_bytes!("../assets/favicon.svg"),
        SVG,
    ),
];

/// The asset served at `path` (`/` and the page routes are the
/// dashboard's entry page).
pub fn asset(path: &str) -> Option<Asset> {
    if PAGES.contains(&path) {
        return Some(Asset {
            bytes: INDEX_HTML,
            content_type: HTML,
        });
    }
    FILES
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, bytes, content_type)| Asset {
            bytes,
            content_type,
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn entry_page_is_embedded_at_every_route() {
        for path in PAGES {
            let page = asset(path).unwrap();
            assert_eq!(page.content_type, HTML);
            assert!(
                std::str::from_utf8(page.bytes)
                    .unwrap()
                    .contains("<title>Ward</title>")
            );
        }
        assert!(asset("/nope").is_none());
        assert!(asset("/assets/").is_none());
        assert!(asset("/search/x").is_none());
    }

    #[test]
    fn every_file_the_pages_load_is_embedded() {
        let text = |p: &str| String::from_utf8(asset(p).unwrap().bytes.to_vec()).unwrap();
        let html = text("/");
        let mut wanted: Vec<String> = Vec::new();
        for attr in ["src=\"", "href=\""] {
            for part in html.split(attr).skip(1) {
                let url = part.split('"').next().unwrap();
                if url.starts_with("/assets/") {
                    wanted.push(url.to_owned());
                }
            }
        }
        // Modules import each other as `./x.js`.
        for (path, bytes, ty) in FILES {
            if *ty == JS {
                let js = std::str::from_utf8(bytes).unwrap();
                for part in js.split("from './").skip(1) {
                    let name = part.split('\'').next().unwrap();
                    wanted.push(format!("/assets/{name}"));
                }
                let js = js.replace("http://www.w3.org/2000/svg", "");
                assert!(
                    !js.contains("http://") && !js.contains("https://"),
                    "{path}"
                );
            }
        }
        assert!(wanted.len() > 3, "{wanted:?}");
        for url in wanted {
            assert!(asset(&url).is_some(), "{url} is not embedded");
        }
        // Nothing is loaded from elsewhere: no URL outside this origin.
        assert!(!html.contains("http://") && !html.contains("https://"));
        assert!(!text("/assets/app.css").contains("url(http"));
    }
}

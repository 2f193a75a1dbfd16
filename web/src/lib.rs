//! Ward's web dashboard: static assets compiled into the binary, so the
//! dashboard works on an air-gapped cluster with nothing else to deploy.
//!
//! The HTTP layer (`ward-query-api`) serves these at `/`; this crate only
//! knows which bytes belong to which path.

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub bytes: &'static [u8],
    pub content_type: &'static str,
}

const INDEX_HTML: &str = include_str!("../assets/index.html");

/// The asset served at `path` (`/` is the dashboard's entry page).
pub fn asset(path: &str) -> Option<Asset> {
    match path {
        "/" | "/index.html" => Some(Asset {
            bytes: INDEX_HTML.as_bytes(),
            content_type: "text/html; charset=utf-8",
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn entry_page_is_embedded() {
        let page = super::asset("/").unwrap();
        assert!(
            std::str::from_utf8(page.bytes)
                .unwrap()
                .contains("<title>Ward</title>")
        );
        assert!(super::asset("/nope").is_none());
    }
}

/// One page of a listing (tags or repositories).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<String>,
    /// The `last` parameter of the next page, when there may be one.
    pub next: Option<String>,
}

/// Largest page served; a larger `n` gets this many entries and a next link,
/// which the spec allows.
pub const MAX_PAGE: usize = 10_000;

impl Page {
    /// Builds a page from up to `limit + 1` fetched items: the extra one only
    /// tells that more exist.
    pub(crate) fn from_fetched(mut items: Vec<String>, limit: usize) -> Self {
        let more = items.len() > limit;
        items.truncate(limit);
        let next = if more { items.last().cloned() } else { None };
        Page { items, next }
    }
}

/// The spec's `n` parameter: absent → `default`, else a non-negative integer.
pub(crate) fn page_size(n: Option<&str>, default: usize) -> Result<usize, String> {
    match n {
        None => Ok(default),
        Some(text) => text
            .parse::<usize>()
            .map(|n| n.min(MAX_PAGE))
            .map_err(|_| format!("n={text:?} is not a page size: give a whole number, e.g. n=100")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("t{i}")).collect()
    }

    #[test]
    fn next_only_when_more() {
        assert_eq!(Page::from_fetched(items(3), 3).next, None);
        let page = Page::from_fetched(items(4), 3);
        assert_eq!(page.items.len(), 3);
        assert_eq!(page.next.as_deref(), Some("t2"));
        assert_eq!(
            Page::from_fetched(items(1), 0),
            Page {
                items: vec![],
                next: None
            }
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(page_size(None, 7), Ok(7));
        assert_eq!(page_size(Some("0"), 7), Ok(0));
        assert_eq!(page_size(Some("999999999"), 7), Ok(MAX_PAGE));
        assert!(page_size(Some("-1"), 7).is_err());
        assert!(page_size(Some("x"), 7).is_err());
    }
}

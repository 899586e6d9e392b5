//! `key=value` pairs, as query strings and HTML forms carry them.

/// The pairs of a query string or form, in order.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    /// A request's query string (none: no pairs).
    pub fn parse(query: Option<&str>) -> Self {
        Query::from_form(query.unwrap_or("").as_bytes())
    }

    /// An `application/x-www-form-urlencoded` body.
    pub fn from_form(bytes: &[u8]) -> Self {
        Query(form_urlencoded::parse(bytes).into_owned().collect())
    }

    /// The first value of `key`.
    pub fn get<'a>(&'a self, key: &str) -> Option<&'a str> {
        self.all(key).next()
    }

    /// Every value of `key`, in order.
    pub fn all<'a, 'k>(&'a self, key: &'k str) -> impl Iterator<Item = &'a str> + use<'a, 'k> {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The `Link` header of a paginated listing, when there is a next page:
    /// `path` with this request's `kept` parameter (the page size, the
    /// filter) and the next page's `last`.
    pub fn next_link(&self, path: &str, kept: &str, last: Option<&str>) -> Option<String> {
        let last = last?;
        let mut next = form_urlencoded::Serializer::new(String::new());
        if let Some(value) = self.get(kept) {
            next.append_pair(kept, value);
        }
        next.append_pair("last", last);
        Some(format!("<{path}?{}>; rel=\"next\"", next.finish()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_and_links() {
        let query = Query::parse(Some("scope=a&n=2&scope=b%3Ac"));
        assert_eq!(query.get("scope"), Some("a"));
        assert_eq!(query.all("scope").collect::<Vec<_>>(), ["a", "b:c"]);
        assert_eq!(
            query.next_link("/v2/_catalog", "n", Some("x/y")).unwrap(),
            "</v2/_catalog?n=2&last=x%2Fy>; rel=\"next\""
        );
        assert_eq!(query.next_link("/v2/_catalog", "n", None), None);
        assert_eq!(Query::parse(None).get("n"), None);
    }
}

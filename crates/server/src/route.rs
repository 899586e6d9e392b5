//! Which endpoint of the Distribution API a path names.
//!
//! Repository names contain slashes, so a path is read from its end: the last
//! one to three segments name the endpoint and everything before is the name.

/// An endpoint of the Distribution API, borrowing from the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags { name: &'a str },
    /// `/v2/<name>/manifests/<reference>`
    Manifest { name: &'a str, reference: &'a str },
    /// `/v2/<name>/blobs/<digest>`
    Blob { name: &'a str, digest: &'a str },
    /// `/v2/<name>/blobs/uploads/`
    Uploads { name: &'a str },
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload { name: &'a str, id: &'a str },
    /// `/v2/<name>/referrers/<digest>`
    Referrers { name: &'a str, digest: &'a str },
}

impl<'a> Route<'a> {
    /// The repository it names, if it names one.
    pub fn name(self) -> Option<&'a str> {
        match self {
            Route::Base | Route::Catalog => None,
            Route::Tags { name }
            | Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::Uploads { name }
            | Route::Upload { name, .. }
            | Route::Referrers { name, .. } => Some(name),
        }
    }

    /// The same endpoint of repository `name` (a pull-through cache keeps
    /// a mirrored repository under another name).
    pub fn renamed<'b>(self, name: &'b str) -> Route<'b>
    where
        'a: 'b,
    {
        match self {
            Route::Base => Route::Base,
            Route::Catalog => Route::Catalog,
            Route::Tags { .. } => Route::Tags { name },
            Route::Manifest { reference, .. } => Route::Manifest { name, reference },
            Route::Blob { digest, .. } => Route::Blob { name, digest },
            Route::Uploads { .. } => Route::Uploads { name },
            Route::Upload { id, .. } => Route::Upload { name, id },
            Route::Referrers { digest, .. } => Route::Referrers { name, digest },
        }
    }

    pub fn parse(path: &'a str) -> Option<Self> {
        let rest = path.strip_prefix("/v2")?;
        if rest.is_empty() || rest == "/" {
            return Some(Route::Base);
        }
        let rest = rest.strip_prefix('/')?;
        if rest == "_catalog" {
            return Some(Route::Catalog);
        }
        // Name and last segment; the name must be non-empty.
        let split = |s: &'a str| s.rsplit_once('/').filter(|(name, _)| !name.is_empty());
        if let Some(name) = rest
            .strip_suffix("/blobs/uploads")
            .or_else(|| rest.strip_suffix("/blobs/uploads/"))
        {
            return (!name.is_empty()).then_some(Route::Uploads { name });
        }
        if let Some(name) = rest.strip_suffix("/tags/list") {
            return (!name.is_empty()).then_some(Route::Tags { name });
        }
        let (head, last) = split(rest)?;
        if last.is_empty() {
            return None;
        }
        let (name, kind) = split(head)?;
        match kind {
            "manifests" => Some(Route::Manifest {
                name,
                reference: last,
            }),
            "blobs" => Some(Route::Blob { name, digest: last }),
            "referrers" => Some(Route::Referrers { name, digest: last }),
            "uploads" => {
                let name = name.strip_suffix("/blobs").filter(|n| !n.is_empty())?;
                Some(Route::Upload { name, id: last })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Route::{self, *};

    fn r(p: &str) -> Option<Route<'_>> {
        Route::parse(p)
    }

    #[test]
    fn endpoints() {
        assert_eq!(r("/v2/"), Some(Base));
        assert_eq!(r("/v2"), Some(Base));
        assert_eq!(r("/v2/_catalog"), Some(Catalog));
        assert_eq!(r("/v2/a/b/tags/list"), Some(Tags { name: "a/b" }));
        assert_eq!(
            r("/v2/a/manifests/v1"),
            Some(Manifest {
                name: "a",
                reference: "v1"
            })
        );
        assert_eq!(
            r("/v2/a/b/blobs/sha256:00"),
            Some(Blob {
                name: "a/b",
                digest: "sha256:00"
            })
        );
        assert_eq!(r("/v2/a/blobs/uploads/"), Some(Uploads { name: "a" }));
        assert_eq!(r("/v2/a/blobs/uploads"), Some(Uploads { name: "a" }));
        assert_eq!(
            r("/v2/a/blobs/uploads/123-abc"),
            Some(Upload {
                name: "a",
                id: "123-abc"
            })
        );
        assert_eq!(
            r("/v2/a/referrers/sha256:00"),
            Some(Referrers {
                name: "a",
                digest: "sha256:00"
            })
        );
    }

    #[test]
    fn renaming_keeps_the_endpoint() {
        let route = r("/v2/library/nginx/manifests/1").unwrap();
        assert_eq!(route.name(), Some("library/nginx"));
        assert_eq!(
            route.renamed("hub/library/nginx"),
            Manifest {
                name: "hub/library/nginx",
                reference: "1"
            }
        );
        assert_eq!(Catalog.renamed("x"), Catalog);
        assert_eq!(Catalog.name(), None);
    }

    #[test]
    fn names_may_contain_endpoint_words() {
        assert_eq!(
            r("/v2/blobs/manifests/blobs/x"),
            Some(Blob {
                name: "blobs/manifests",
                digest: "x"
            })
        );
        assert_eq!(
            r("/v2/tags/list/manifests/latest"),
            Some(Manifest {
                name: "tags/list",
                reference: "latest"
            })
        );
        assert_eq!(
            r("/v2/blobs/uploads/blobs/uploads/u"),
            Some(Upload {
                name: "blobs/uploads",
                id: "u"
            })
        );
    }

    #[test]
    fn not_endpoints() {
        for p in [
            "/",
            "/v3/",
            "/v2x",
            "/v2/a",
            "/v2/a/",
            "/v2/manifests/x",
            "/v2/a/manifests/",
            "/v2/a/unknown/x",
            "/v2//blobs/uploads/",
            "/v2/tags/list",
            "/v2/uploads/x",
        ] {
            assert_eq!(r(p), None, "{p}");
        }
    }
}

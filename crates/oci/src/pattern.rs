//! Patterns over repository names and tags, as access policies, quotas,
//! retention and immutability rules name them.

use regex::Regex;

/// A repository pattern: `team-a/*` (one path segment), `team-a/**` (anything
/// below), `**` (everything) or an exact name.
#[derive(Debug, Clone)]
pub struct RepositoryPattern {
    text: String,
    regex: Regex,
}

impl PartialEq for RepositoryPattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for RepositoryPattern {}

impl RepositoryPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || text.starts_with('/') || text.ends_with('/') {
            return Err(format!(
                "repository pattern {text:?} is not valid: write e.g. team-a/app, team-a/* or team-a/**"
            ));
        }
        Ok(RepositoryPattern {
            text: text.to_owned(),
            regex: Regex::new(&pattern_regex(text, "[^/]*")).map_err(|e| e.to_string())?,
        })
    }

    pub fn matches(&self, repository: &str) -> bool {
        self.regex.is_match(repository)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// What every name it matches starts with: the text before its first
    /// wildcard (all of it for an exact name), for finding candidates in
    /// sorted names.
    pub fn literal_prefix(&self) -> &str {
        self.text.split('*').next().unwrap_or("")
    }

    /// Whether every repository `other` matches is matched by `self` too.
    ///
    /// `other`'s wildcards are replaced by marker characters no repository
    /// name holds: `*` by one that only `*` or `**` of `self` can absorb,
    /// `**` by one that only `**` can. Whatever a wildcard of `other` stands
    /// for, the same part of `self` then absorbs it, so a match is a proof
    /// of inclusion (never a false yes; a rare false no only refuses).
    pub fn covers(&self, other: &RepositoryPattern) -> bool {
        if other.text.contains([ONE_SEGMENT_MARK, ANY_MARK]) {
            return false;
        }
        let probe = other
            .text
            .replace("**", &ANY_MARK.to_string())
            .replace('*', &ONE_SEGMENT_MARK.to_string());
        let segment = format!("[^/{}]*", regex::escape(&ANY_MARK.to_string()));
        Regex::new(&pattern_regex(&self.text, &segment)).is_ok_and(|r| r.is_match(&probe))
    }
}

const ONE_SEGMENT_MARK: char = '\u{1}';
const ANY_MARK: char = '\u{2}';

/// The anchored regex of a pattern, `*` becoming `segment`.
fn pattern_regex(text: &str, segment: &str) -> String {
    let mut pattern = String::from("^");
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("**") {
            pattern.push_str("(?s:.*)");
            rest = after;
        } else if let Some(after) = rest.strip_prefix('*') {
            pattern.push_str(segment);
            rest = after;
        } else {
            let c = rest.chars().next().expect("non-empty");
            pattern.push_str(&regex::escape(&c.to_string()));
            rest = &rest[c.len_utf8()..];
        }
    }
    pattern.push('$');
    pattern
}

/// A tag pattern: `*` stands for any run of characters, `?` for one; `*`
/// alone matches every tag.
#[derive(Debug, Clone)]
pub struct TagPattern {
    text: String,
    regex: Regex,
}

impl PartialEq for TagPattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for TagPattern {}

impl TagPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let valid = !text.is_empty()
            && text.len() <= 128
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '*' | '?'));
        if !valid {
            return Err(format!(
                "tag pattern {text:?} is not valid: write a tag with * or ? wildcards, e.g. v* \
                 or release-?"
            ));
        }
        let mut pattern = String::from("^");
        for c in text.chars() {
            match c {
                '*' => pattern.push_str(".*"),
                '?' => pattern.push('.'),
                c => pattern.push_str(&regex::escape(&c.to_string())),
            }
        }
        pattern.push('$');
        Ok(TagPattern {
            text: text.to_owned(),
            regex: Regex::new(&pattern).map_err(|e| e.to_string())?,
        })
    }

    pub fn matches(&self, tag: &str) -> bool {
        self.regex.is_match(tag)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let one = RepositoryPattern::parse("team-a/*").unwrap();
        assert!(one.matches("team-a/app"));
        assert!(!one.matches("team-a/app/sub"));
        assert!(!one.matches("team-ab/app"));
        let deep = RepositoryPattern::parse("team-a/**").unwrap();
        assert!(deep.matches("team-a/app/sub"));
        assert!(RepositoryPattern::parse("**").unwrap().matches("x/y/z"));
        let exact = RepositoryPattern::parse("a.b").unwrap();
        assert!(exact.matches("a.b") && !exact.matches("axb"));
        assert!(RepositoryPattern::parse("").is_err());
        assert_eq!(deep.literal_prefix(), "team-a/");
        assert_eq!(exact.literal_prefix(), "a.b");
        assert_eq!(RepositoryPattern::parse("**").unwrap().literal_prefix(), "");
    }

    #[test]
    fn tag_patterns() {
        let v = TagPattern::parse("v*").unwrap();
        assert!(v.matches("v1.2.3") && v.matches("v") && !v.matches("latest"));
        let one = TagPattern::parse("rc-?").unwrap();
        assert!(one.matches("rc-1") && !one.matches("rc-10"));
        assert!(TagPattern::parse("*").unwrap().matches("anything"));
        let dot = TagPattern::parse("1.0").unwrap();
        assert!(!dot.matches("1x0"));
        for bad in ["", "a/b", "a b"] {
            assert!(TagPattern::parse(bad).is_err(), "{bad}");
        }
    }
}

//! Actions, token scopes (`repository:team/app:pull,push`) and access claims.

use serde::{Deserialize, Serialize};

/// What can be done to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Pull, Action::Push, Action::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    /// Parses one action; `*` stands for all of them.
    pub fn parse_list(text: &str) -> Option<Vec<Action>> {
        match text {
            "*" => Some(Action::ALL.to_vec()),
            "pull" => Some(vec![Action::Pull]),
            "push" => Some(vec![Action::Push]),
            "delete" => Some(vec![Action::Delete]),
            _ => None,
        }
    }
}

/// One entry of a token's `access` claim, and one requested scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceAccess {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl ResourceAccess {
    /// Parses a scope `type[(class)]:name:action[,action…]`. The name may itself
    /// contain colons (a registry host with a port), so the type ends at the
    /// first colon and the actions start after the last. The deprecated class is
    /// dropped.
    pub fn parse_scope(scope: &str) -> Option<Self> {
        let (kind, rest) = scope.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        let kind = kind.split_once('(').map_or(kind, |(k, _)| k);
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        Some(ResourceAccess {
            kind: kind.to_owned(),
            name: name.to_owned(),
            actions: actions
                .split(',')
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }

    /// The scope string of this access, as in a `WWW-Authenticate` challenge.
    pub fn to_scope(&self) -> String {
        format!("{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        let s = ResourceAccess::parse_scope("repository:team/app:pull,push").unwrap();
        assert_eq!(
            (s.kind.as_str(), s.name.as_str()),
            ("repository", "team/app")
        );
        assert_eq!(s.actions, ["pull", "push"]);
        assert_eq!(s.to_scope(), "repository:team/app:pull,push");
        let s = ResourceAccess::parse_scope("repository(plugin):a:pull").unwrap();
        assert_eq!(s.kind, "repository");
        let s = ResourceAccess::parse_scope("registry:catalog:*").unwrap();
        assert_eq!((s.name.as_str(), s.actions[0].as_str()), ("catalog", "*"));
        let s = ResourceAccess::parse_scope("repository:localhost:5000/a:pull").unwrap();
        assert_eq!(s.name, "localhost:5000/a");
        for bad in [
            "",
            "repository",
            "repository:a",
            ":a:pull",
            "repository::pull",
        ] {
            assert!(ResourceAccess::parse_scope(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn actions() {
        assert_eq!(Action::parse_list("*").unwrap().len(), 3);
        assert_eq!(Action::parse_list("pull"), Some(vec![Action::Pull]));
        assert_eq!(Action::parse_list("write"), None);
    }
}

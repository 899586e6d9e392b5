//! The access policy: subjects → repository patterns → actions.
//!
//! ```toml
//! [groups]
//! developers = ["alice", "bob"]
//!
//! [[policy]]
//! subjects = ["group:developers"]
//! repositories = ["team-a/**"]
//! actions = ["pull", "push"]
//!
//! [[policy]]
//! subjects = ["anonymous"]
//! repositories = ["public/*"]
//! actions = ["pull"]
//! ```
//!
//! Rules only grant; anything no rule grants is refused. Without any rule,
//! every authenticated user may do everything and anonymous requests nothing.
//! Robot accounts carry their own scope; a rule naming `robot:NAME` grants a
//! robot more, while `authenticated` means users only, so that a broad rule
//! never widens a robot made narrow on purpose.

use std::collections::BTreeMap;

pub use berth_oci::RepositoryPattern;
use serde::Deserialize;

use crate::Subject;
use crate::robots::ROBOT_PREFIX;
use crate::scope::Action;

/// One `[[policy]]` table as written in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// `user:NAME`, `group:NAME`, `anonymous` or `authenticated`.
    pub subjects: Vec<String>,
    #[serde(default)]
    pub repositories: Vec<String>,
    /// `pull`, `push`, `delete` or `*`.
    #[serde(default)]
    pub actions: Vec<String>,
    /// Whether these subjects may list the catalog.
    #[serde(default)]
    pub catalog: bool,
    /// Whether these subjects administer the registry: run garbage
    /// collection, list repositories with their sizes, delete repositories
    /// whole, force the delete of a blob still in use.
    #[serde(default)]
    pub admin: bool,
}

/// The policy part of the configuration.
#[derive(Debug, Clone, Default)]
pub struct PolicyConfig {
    pub groups: BTreeMap<String, Vec<String>>,
    pub rules: Vec<RuleConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SubjectMatcher {
    Anonymous,
    Authenticated,
    User(String),
    Group(Vec<String>),
    /// A robot's user name, `robot.NAME`.
    Robot(String),
}

impl SubjectMatcher {
    fn matches(&self, subject: &Subject) -> bool {
        match (self, subject) {
            (SubjectMatcher::Anonymous, Subject::Anonymous) => true,
            (SubjectMatcher::Authenticated, Subject::User(_)) => true,
            (SubjectMatcher::User(name), Subject::User(user)) => name == user,
            (SubjectMatcher::Group(members), Subject::User(user)) => members.contains(user),
            (SubjectMatcher::Robot(name), Subject::Robot(robot)) => *name == robot.username,
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    subjects: Vec<SubjectMatcher>,
    repositories: Vec<RepositoryPattern>,
    actions: Vec<Action>,
    catalog: bool,
    admin: bool,
}

#[derive(Debug, Clone)]
pub struct Policy {
    /// `None`: no rules configured, the default policy applies.
    rules: Option<Vec<Rule>>,
}

/// What in a valid policy can never take effect: rules naming users that
/// `known_user` does not know (a typo, or a user not added yet) and
/// repository patterns with upper-case letters (repository names have
/// none). Each is one sentence for a start-up warning.
pub fn policy_warnings(config: &PolicyConfig, known_user: impl Fn(&str) -> bool) -> Vec<String> {
    let mut warnings = Vec::new();
    for (index, rule) in config.rules.iter().enumerate() {
        let at = format!("policy rule {}", index + 1);
        for subject in &rule.subjects {
            let users: Vec<String> = match subject.split_once(':') {
                Some(("user", name)) => vec![name.to_owned()],
                Some(("group", group)) => config
                    .groups
                    .get(group)
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect(),
                _ => Vec::new(),
            };
            for user in users.iter().filter(|u| !known_user(u)) {
                warnings.push(format!(
                    "{at} names user {user:?} ({subject}), who is not in the htpasswd file: it \
                     does nothing for them until they are added (berth user add {user})"
                ));
            }
        }
        for pattern in rule
            .repositories
            .iter()
            .filter(|p| p.chars().any(|c| c.is_ascii_uppercase()))
        {
            warnings.push(format!(
                "{at}: the repository pattern {pattern:?} has upper-case letters, which \
                 repository names never have: it matches nothing (write it in lower case)"
            ));
        }
    }
    warnings
}

impl Policy {
    pub fn new(config: PolicyConfig) -> Result<Self, String> {
        if config.rules.is_empty() {
            return Ok(Policy { rules: None });
        }
        let mut rules = Vec::new();
        for (index, rule) in config.rules.iter().enumerate() {
            let at = |what: String| format!("policy rule {}: {what}", index + 1);
            if rule.subjects.is_empty() {
                return Err(at("it names no subjects".into()));
            }
            let subjects = rule
                .subjects
                .iter()
                .map(|s| match s.as_str() {
                    "anonymous" => Ok(SubjectMatcher::Anonymous),
                    "authenticated" => Ok(SubjectMatcher::Authenticated),
                    other => match other.split_once(':') {
                        Some(("user", name)) if !name.is_empty() => Ok(SubjectMatcher::User(name.to_owned())),
                        Some(("robot", name)) if !name.is_empty() => {
                            Ok(SubjectMatcher::Robot(format!("{ROBOT_PREFIX}{name}")))
                        }
                        Some(("group", name)) => config
                            .groups
                            .get(name)
                            .map(|m| SubjectMatcher::Group(m.clone()))
                            .ok_or_else(|| at(format!("group {name:?} is not defined under [groups]"))),
                        _ => Err(at(format!(
                            "subject {other:?} is not one of user:NAME, group:NAME, robot:NAME, anonymous, authenticated"
                        ))),
                    },
                })
                .collect::<Result<Vec<_>, _>>()?;
            let repositories = rule
                .repositories
                .iter()
                .map(|p| RepositoryPattern::parse(p).map_err(at))
                .collect::<Result<Vec<_>, _>>()?;
            let mut actions = Vec::new();
            for action in &rule.actions {
                let parsed = Action::parse_list(action).ok_or_else(|| {
                    at(format!("action {action:?} is not pull, push, delete or *"))
                })?;
                actions.extend(parsed);
            }
            if repositories.is_empty() != actions.is_empty() {
                return Err(at("give both repositories and actions, or neither".into()));
            }
            if repositories.is_empty() && !rule.catalog && !rule.admin {
                return Err(at(
                    "it grants nothing: add repositories and actions, catalog = true or \
                     admin = true"
                        .into(),
                ));
            }
            rules.push(Rule {
                subjects,
                repositories,
                actions,
                catalog: rule.catalog,
                admin: rule.admin,
            });
        }
        Ok(Policy { rules: Some(rules) })
    }

    fn rules_for<'a>(&'a self, subject: &'a Subject) -> impl Iterator<Item = &'a Rule> {
        self.rules
            .iter()
            .flatten()
            .filter(move |rule| rule.subjects.iter().any(|m| m.matches(subject)))
    }

    fn rules_allow(&self, subject: &Subject, repository: &str, action: Action) -> bool {
        self.rules_for(subject).any(|rule| {
            rule.actions.contains(&action)
                && rule.repositories.iter().any(|p| p.matches(repository))
        })
    }

    pub fn allows(&self, subject: &Subject, repository: &str, action: Action) -> bool {
        match (subject, &self.rules) {
            // Never more than its holder may do now, so removing the holder
            // or its rights also takes them from credentials already issued.
            (Subject::PullCredential(grant), _) => {
                action == Action::Pull
                    && grant.repositories.iter().any(|p| p.matches(repository))
                    && self.allows(&grant.holder, repository, action)
            }
            (Subject::Robot(robot), _) => {
                robot.allows(repository, action) || self.rules_allow(subject, repository, action)
            }
            (Subject::User(_), None) => true,
            (Subject::Anonymous, None) => false,
            (_, Some(_)) => self.rules_allow(subject, repository, action),
        }
    }

    pub fn allows_catalog(&self, subject: &Subject) -> bool {
        match (subject, &self.rules) {
            (Subject::PullCredential(_), _) => false,
            (Subject::User(_), None) => true,
            (Subject::Anonymous | Subject::Robot(_), None) => false,
            (_, Some(_)) => self.rules_for(subject).any(|rule| rule.catalog),
        }
    }

    /// Whether `subject` administers the registry: without rules every user
    /// does (as every user may do everything); with rules, those a rule
    /// with `admin = true` names. Robots and pull credentials never do.
    pub fn allows_admin(&self, subject: &Subject) -> bool {
        match (subject, &self.rules) {
            (Subject::User(_), None) => true,
            (Subject::User(_), Some(_)) => self.rules_for(subject).any(|rule| rule.admin),
            (Subject::Anonymous | Subject::Robot(_) | Subject::PullCredential(_), _) => false,
        }
    }

    /// The repository patterns `subject` may pull from, as the policy states
    /// them (empty when none): what a pull credential may be issued for.
    pub fn pull_patterns(&self, subject: &Subject) -> Vec<RepositoryPattern> {
        let mut patterns = match (subject, &self.rules) {
            (Subject::PullCredential(_), _) => return Vec::new(),
            (Subject::User(_), None) => {
                return vec![RepositoryPattern::parse("**").expect("valid pattern")];
            }
            (Subject::Robot(robot), _) if robot.actions.contains(&Action::Pull) => {
                robot.repositories.clone()
            }
            _ => Vec::new(),
        };
        for rule in self.rules_for(subject) {
            if rule.actions.contains(&Action::Pull) {
                patterns.extend(rule.repositories.iter().cloned());
            }
        }
        let mut seen = std::collections::HashSet::new();
        patterns.retain(|p| seen.insert(p.as_str().to_owned()));
        patterns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(subjects: &[&str], repositories: &[&str], actions: &[&str]) -> RuleConfig {
        RuleConfig {
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            repositories: repositories.iter().map(|s| s.to_string()).collect(),
            actions: actions.iter().map(|s| s.to_string()).collect(),
            catalog: false,
            admin: false,
        }
    }

    fn user(name: &str) -> Subject {
        Subject::User(name.into())
    }

    #[test]
    fn default_policy() {
        let policy = Policy::new(PolicyConfig::default()).unwrap();
        assert!(policy.allows(&user("x"), "any/thing", Action::Delete));
        assert!(policy.allows_catalog(&user("x")));
        assert!(!policy.allows(&Subject::Anonymous, "any", Action::Pull));
        assert!(!policy.allows_catalog(&Subject::Anonymous));
    }

    #[test]
    fn rules_grant_only_what_they_say() {
        let mut groups = BTreeMap::new();
        groups.insert("dev".to_owned(), vec!["alice".to_owned()]);
        let mut catalog = rule(&["authenticated"], &[], &[]);
        catalog.catalog = true;
        let policy = Policy::new(PolicyConfig {
            groups,
            rules: vec![
                rule(&["group:dev"], &["team-a/**"], &["pull", "push"]),
                rule(&["user:bob"], &["team-a/app"], &["pull"]),
                rule(&["anonymous"], &["public/*"], &["pull"]),
                rule(&["user:root"], &["**"], &["*"]),
                catalog,
            ],
        })
        .unwrap();
        assert!(policy.allows(&user("alice"), "team-a/x/y", Action::Push));
        assert!(!policy.allows(&user("alice"), "team-a/x", Action::Delete));
        assert!(!policy.allows(&user("alice"), "team-b/x", Action::Pull));
        assert!(policy.allows(&user("bob"), "team-a/app", Action::Pull));
        assert!(!policy.allows(&user("bob"), "team-a/app", Action::Push));
        assert!(policy.allows(&Subject::Anonymous, "public/x", Action::Pull));
        assert!(!policy.allows(&Subject::Anonymous, "team-a/app", Action::Pull));
        assert!(policy.allows(&user("root"), "z", Action::Delete));
        assert!(policy.allows_catalog(&user("carol")));
        assert!(!policy.allows_catalog(&Subject::Anonymous));
        assert!(
            !policy.allows_admin(&user("root")),
            "admin is granted by name only"
        );
    }

    #[test]
    fn admins_are_named_by_rules() {
        assert!(
            Policy::new(PolicyConfig::default())
                .unwrap()
                .allows_admin(&user("anyone"))
        );
        let mut admin = rule(&["user:root"], &[], &[]);
        admin.admin = true;
        let policy = Policy::new(PolicyConfig {
            groups: BTreeMap::new(),
            rules: vec![admin, rule(&["authenticated"], &["**"], &["*"])],
        })
        .unwrap();
        assert!(policy.allows_admin(&user("root")));
        assert!(!policy.allows_admin(&user("alice")));
        assert!(!policy.allows_admin(&Subject::Anonymous));
    }

    #[test]
    fn robots_keep_their_scope_unless_a_rule_names_them() {
        let robot = |name: &str| {
            Subject::Robot(crate::robots::RobotGrant {
                username: format!("robot.{name}"),
                repositories: vec![RepositoryPattern::parse("team/*").unwrap()],
                actions: vec![Action::Pull],
                expires_at: None,
            })
        };
        let mut extra = rule(&["robot:ci"], &["tools/*"], &["pull", "push"]);
        extra.catalog = true;
        let policy = Policy::new(PolicyConfig {
            groups: BTreeMap::new(),
            rules: vec![rule(&["authenticated"], &["**"], &["*"]), extra],
        })
        .unwrap();
        assert!(policy.allows(&robot("ci"), "team/app", Action::Pull));
        assert!(policy.allows(&robot("ci"), "tools/x", Action::Push));
        assert!(policy.allows_catalog(&robot("ci")));
        assert!(
            !policy.allows(&robot("other"), "tools/x", Action::Pull),
            "authenticated is users only"
        );
        assert!(!policy.allows(&robot("other"), "team/app", Action::Push));
        assert!(!policy.allows_catalog(&robot("other")));
    }

    #[test]
    fn pull_patterns_follow_the_rules() {
        let policy = Policy::new(PolicyConfig {
            groups: BTreeMap::new(),
            rules: vec![
                rule(&["user:alice"], &["team/*", "public/**"], &["pull"]),
                rule(&["user:alice"], &["team/*"], &["pull", "push"]),
                rule(&["user:bob"], &["team/*"], &["push"]),
                rule(&["robot:ci"], &["extra/*"], &["pull"]),
            ],
        })
        .unwrap();
        let texts = |s: &Subject| {
            policy
                .pull_patterns(s)
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(texts(&user("alice")), ["team/*", "public/**"]);
        assert!(texts(&user("bob")).is_empty());
        let robot = Subject::Robot(crate::robots::RobotGrant {
            username: "robot.ci".into(),
            repositories: vec![RepositoryPattern::parse("ci/*").unwrap()],
            actions: vec![Action::Pull],
            expires_at: None,
        });
        assert_eq!(texts(&robot), ["ci/*", "extra/*"]);
        let default = Policy::new(PolicyConfig::default()).unwrap();
        assert_eq!(default.pull_patterns(&user("x"))[0].as_str(), "**");
        assert!(default.pull_patterns(&Subject::Anonymous).is_empty());
    }

    #[test]
    fn bad_rules_are_named() {
        let err = |r: RuleConfig| {
            Policy::new(PolicyConfig {
                groups: BTreeMap::new(),
                rules: vec![r],
            })
            .unwrap_err()
        };
        assert!(err(rule(&["group:nope"], &["a"], &["pull"])).contains("group \"nope\""));
        assert!(err(rule(&["someone"], &["a"], &["pull"])).contains("subject"));
        assert!(err(rule(&["anonymous"], &["a"], &["write"])).contains("action \"write\""));
        assert!(err(rule(&["anonymous"], &["a"], &[])).contains("both"));
        assert!(err(rule(&["anonymous"], &[], &[])).contains("grants nothing"));
    }

    #[test]
    fn warnings_name_what_can_never_match() {
        let config = PolicyConfig {
            groups: BTreeMap::from([(
                "devs".to_owned(),
                vec!["alice".to_owned(), "bobb".to_owned()],
            )]),
            rules: vec![
                RuleConfig {
                    subjects: vec!["user:alice".into(), "user:carol".into(), "anonymous".into()],
                    repositories: vec!["Team/App".into(), "team/*".into()],
                    actions: vec!["pull".into()],
                    catalog: false,
                    admin: false,
                },
                RuleConfig {
                    subjects: vec!["group:devs".into(), "robot:ci".into()],
                    repositories: vec![],
                    actions: vec![],
                    catalog: true,
                    admin: false,
                },
            ],
        };
        let warnings = policy_warnings(&config, |user| user == "alice");
        assert_eq!(warnings.len(), 3, "{warnings:#?}");
        assert!(warnings[0].starts_with("policy rule 1 names user \"carol\""));
        assert!(warnings[1].contains("\"Team/App\" has upper-case letters"));
        assert!(warnings[2].starts_with("policy rule 2 names user \"bobb\" (group:devs)"));
    }
}

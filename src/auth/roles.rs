//! Who may do what to a repository (pure): the roles, a repository's visibility and
//! grants as runway.toml writes them, the person or program behind a request, and the
//! role that person has on a repository.

use serde::Deserialize;

/// What a person may do to a repository; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Its pages, logs, badge and the API's reads.
    Read,
    /// Cancel, restart, approve a fork's build, trigger a build through the API.
    Write,
    /// Settings, caches, workers.
    Admin,
}

impl Role {
    /// The name runway.toml and the API use.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }

    /// The role a name stands for.
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Who may read a repository without a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Anyone may read it; writes still need a grant.
    Public,
    /// Only those granted a role see it; to everyone else it does not exist (404).
    Private,
}

/// `[[repo.grant]]`: a role for one person (by the name sign-in gives them) or for
/// everyone in a group of the ID token's `groups` claim.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// A person: their email (else preferred_username, else sub).
    pub user: Option<String>,
    /// A group of the `groups` claim.
    pub group: Option<String>,
    /// What they may do.
    pub role: Role,
}

impl Grant {
    /// What is wrong with this grant as written, if anything.
    pub fn problem(&self) -> Option<&'static str> {
        match (&self.user, &self.group) {
            (Some(_), Some(_)) => Some("a grant names a user or a group, not both"),
            (None, None) => Some("a grant needs user = \"…\" or group = \"…\""),
            (Some(u), None) | (None, Some(u)) if u.trim().is_empty() => {
                Some("a grant's user or group is empty")
            }
            _ => None,
        }
    }

    fn covers(&self, person: &Person) -> bool {
        match (&self.user, &self.group) {
            (Some(u), _) => u.eq_ignore_ascii_case(&person.name),
            (None, Some(g)) => person.groups.iter().any(|pg| pg == g),
            (None, None) => false,
        }
    }
}

/// One repository's access as runway.toml sets it.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    /// Public or private.
    pub visibility: Visibility,
    /// Its grants.
    pub grants: &'a [Grant],
}

/// A signed-in person as their ID token named them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// Their name: the ID token's email, else preferred_username, else sub.
    pub name: String,
    /// Their groups (the `groups` claim).
    pub groups: Vec<String>,
}

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// Nobody signed in, no token.
    Anonymous,
    /// The holder of the server's API token (`api_token_env`): admin everywhere.
    ApiToken,
    /// A person through their session.
    Signed(Person),
    /// A person's own API token: at most `role`, on `repos` only.
    Token {
        /// Whose token.
        person: Person,
        /// The repositories it may act on.
        repos: Vec<String>,
        /// The most it may do there.
        role: Role,
    },
}

impl Who {
    /// The name the audit trail records.
    pub fn name(&self) -> String {
        match self {
            Who::Anonymous => "anonymous".into(),
            Who::ApiToken => "the API token".into(),
            Who::Signed(p) => p.name.clone(),
            Who::Token { person, .. } => format!("{} (personal token)", person.name),
        }
    }
}

/// The role `who` has on a repository, if any. `signing_in` is whether the server has
/// `[auth]`: without it every repository is public and only the API token writes.
pub fn role(access: Access<'_>, repo: &str, who: &Who, signing_in: bool) -> Option<Role> {
    let floor = if !signing_in || access.visibility == Visibility::Public {
        Some(Role::Read)
    } else {
        None
    };
    let granted = |p: &Person| {
        if !signing_in {
            return None;
        }
        access
            .grants
            .iter()
            .filter(|g| g.covers(p))
            .map(|g| g.role)
            .max()
    };
    let own = match who {
        Who::Anonymous => None,
        Who::ApiToken => Some(Role::Admin),
        Who::Signed(p) => granted(p),
        // A token does no more than its holder may now, nor than it was made for.
        Who::Token {
            person,
            repos,
            role,
        } if repos.iter().any(|r| r == repo) => granted(person).map(|g| g.min(*role)),
        Who::Token { .. } => None,
    };
    own.max(floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants() -> Vec<Grant> {
        vec![
            Grant {
                user: None,
                group: Some("dev".into()),
                role: Role::Read,
            },
            Grant {
                user: Some("walt@example.com".into()),
                group: None,
                role: Role::Write,
            },
        ]
    }

    fn person(name: &str, groups: &[&str]) -> Person {
        Person {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn a_private_repository_is_for_its_grants_only() {
        let g = grants();
        let private = Access {
            visibility: Visibility::Private,
            grants: &g,
        };
        let r = |who: &Who| role(private, "o/app", who, true);
        assert_eq!(r(&Who::Anonymous), None);
        assert_eq!(r(&Who::Signed(person("eve@example.com", &["ops"]))), None);
        assert_eq!(
            r(&Who::Signed(person("rita@example.com", &["dev"]))),
            Some(Role::Read)
        );
        assert_eq!(
            r(&Who::Signed(person("Walt@Example.com", &[]))),
            Some(Role::Write)
        );
        assert_eq!(r(&Who::ApiToken), Some(Role::Admin));
    }

    #[test]
    fn a_public_repository_is_read_by_anyone_and_written_by_grants() {
        let g = grants();
        let public = Access {
            visibility: Visibility::Public,
            grants: &g,
        };
        assert_eq!(
            role(public, "o/app", &Who::Anonymous, true),
            Some(Role::Read)
        );
        assert_eq!(
            role(
                public,
                "o/app",
                &Who::Signed(person("walt@example.com", &[])),
                true
            ),
            Some(Role::Write)
        );
    }

    #[test]
    fn a_token_does_no_more_than_its_scope_nor_than_its_holder() {
        let g = grants();
        let private = Access {
            visibility: Visibility::Private,
            grants: &g,
        };
        let token = |repos: &[&str], role: Role, who: Person| Who::Token {
            person: who,
            repos: repos.iter().map(|r| r.to_string()).collect(),
            role,
        };
        let walt = person("walt@example.com", &[]);
        assert_eq!(
            role(
                private,
                "o/app",
                &token(&["o/app"], Role::Read, walt.clone()),
                true
            ),
            Some(Role::Read)
        );
        assert_eq!(
            role(
                private,
                "o/app",
                &token(&["o/other"], Role::Write, walt.clone()),
                true
            ),
            None
        );
        // Made for admin by a writer: a writer's.
        assert_eq!(
            role(
                private,
                "o/app",
                &token(&["o/app"], Role::Admin, walt),
                true
            ),
            Some(Role::Write)
        );
        // Its holder lost the grant: nothing.
        assert_eq!(
            role(
                private,
                "o/app",
                &token(&["o/app"], Role::Write, person("gone@example.com", &[])),
                true
            ),
            None
        );
    }

    #[test]
    fn without_sign_in_everyone_reads_and_only_the_api_token_writes() {
        let g = grants();
        let any = Access {
            visibility: Visibility::Private,
            grants: &g,
        };
        assert_eq!(role(any, "o/app", &Who::Anonymous, false), Some(Role::Read));
        assert_eq!(
            role(
                any,
                "o/app",
                &Who::Signed(person("walt@example.com", &[])),
                false
            ),
            Some(Role::Read)
        );
        assert_eq!(role(any, "o/app", &Who::ApiToken, false), Some(Role::Admin));
    }

    #[test]
    fn a_grant_names_one_subject() {
        let both = Grant {
            user: Some("a".into()),
            group: Some("b".into()),
            role: Role::Read,
        };
        assert!(both.problem().is_some());
        let none = Grant {
            user: None,
            group: None,
            role: Role::Read,
        };
        assert!(none.problem().is_some());
        assert!(grants().iter().all(|g| g.problem().is_none()));
    }
}

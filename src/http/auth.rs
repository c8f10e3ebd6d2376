//! Authentication and authorization (docs/API.md §14): the `-auth` credentials file, HTTP Basic
//! credentials, and the one check every request passes (`router` calls [`Users::check`] with the
//! permissions the endpoint table names; the inter-node service does the same for joins and
//! removals). Passwords are compared in constant time and never logged.

use std::path::Path;

use base64::Engine;
use http::HeaderMap;
use serde::Deserialize;

use super::endpoint::Permission;

/// The user whose permissions apply to everyone, credentials or not.
const EVERYONE: &str = "*";

/// The longest `Authorization` header looked at; anything longer is refused unread.
const MAX_HEADER: usize = 4096;

/// One entry of the credentials file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    perms: Vec<String>,
}

struct User {
    name: String,
    password: String,
    perms: Vec<Permission>,
}

/// The credentials file, loaded.
pub struct Users {
    users: Vec<User>,
}

/// Why the credentials file cannot be used (the node refuses to start).
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: not a JSON array of {{\"username\", \"password\", \"perms\"}}: {source}")]
    Parse { path: String, source: serde_json::Error },
    #[error("{path}: user {user:?}: unknown permission {perm:?}")]
    UnknownPermission { path: String, user: String, perm: String },
    #[error("{path}: user {user:?} is listed twice")]
    Duplicate { path: String, user: String },
}

/// Why a request was refused (the `reason` label of `raftlite_http_auth_failures_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// No credentials, and `*` lacks the permission.
    NoCredentials,
    /// An `Authorization` header that is not well-formed Basic credentials.
    Malformed,
    UnknownUser,
    WrongPassword,
    /// Known user, right password, not allowed to do this.
    NotPermitted,
}

impl Denied {
    pub fn reason(self) -> &'static str {
        match self {
            Denied::NoCredentials => "no_credentials",
            Denied::Malformed => "malformed",
            Denied::UnknownUser => "unknown_user",
            Denied::WrongPassword => "wrong_password",
            Denied::NotPermitted => "not_permitted",
        }
    }
}

/// Equal bytes, in time that depends only on the lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    let diff = a.iter().zip(b).fold(u8::from(a.len() != b.len()), |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Basic credentials from `headers`: `Ok(None)` without an `Authorization` header.
pub fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, Denied> {
    let Some(v) = headers.get(http::header::AUTHORIZATION) else { return Ok(None) };
    if v.len() > MAX_HEADER {
        return Err(Denied::Malformed);
    }
    let v = v.to_str().map_err(|_| Denied::Malformed)?;
    let (scheme, rest) = v.trim().split_once(' ').ok_or(Denied::Malformed)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(Denied::Malformed);
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(rest.trim()).map_err(|_| Denied::Malformed)?;
    let text = String::from_utf8(raw).map_err(|_| Denied::Malformed)?;
    let (user, pass) = text.split_once(':').ok_or(Denied::Malformed)?;
    Ok(Some((user.to_string(), pass.to_string())))
}

/// The `Authorization` header value for Basic credentials.
pub fn basic_header(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

impl Users {
    /// Load the credentials file named by `-auth`.
    pub fn load(path: &Path) -> Result<Users, AuthFileError> {
        let p = path.display().to_string();
        let text = std::fs::read(path).map_err(|source| AuthFileError::Read { path: p.clone(), source })?;
        Users::parse(&p, &text)
    }

    fn parse(path: &str, text: &[u8]) -> Result<Users, AuthFileError> {
        let entries: Vec<Entry> =
            serde_json::from_slice(text).map_err(|source| AuthFileError::Parse { path: path.to_string(), source })?;
        let mut users: Vec<User> = Vec::with_capacity(entries.len());
        for e in entries {
            if users.iter().any(|u| u.name == e.username) {
                return Err(AuthFileError::Duplicate { path: path.to_string(), user: e.username });
            }
            let perms = e
                .perms
                .iter()
                .map(|name| {
                    Permission::from_name(name).ok_or_else(|| AuthFileError::UnknownPermission {
                        path: path.to_string(),
                        user: e.username.clone(),
                        perm: name.clone(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            users.push(User { name: e.username, password: e.password, perms });
        }
        Ok(Users { users })
    }

    /// How many users the file lists (for `/status`).
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The credentials of `name` (`-join-as`), if the file lists it.
    pub fn credentials(&self, name: &str) -> Option<(String, String)> {
        self.users.iter().find(|u| u.name == name).map(|u| (u.name.clone(), u.password.clone()))
    }

    fn has(&self, user: &User, needed: &[Permission]) -> bool {
        user.perms.contains(&Permission::All) || needed.iter().all(|p| user.perms.contains(p))
    }

    /// May the caller with these headers do something that needs every permission in `needed`?
    /// `*`'s permissions apply to everyone; otherwise the Basic credentials must match a user
    /// who has them (or `all`). Returns the user name, when credentials were given.
    pub fn check(&self, headers: &HeaderMap, needed: &[Permission]) -> Result<Option<String>, Denied> {
        if needed.is_empty() {
            return Ok(None);
        }
        if self.users.iter().any(|u| u.name == EVERYONE && self.has(u, needed)) {
            return Ok(None);
        }
        let (name, password) = basic_credentials(headers)?.ok_or(Denied::NoCredentials)?;
        self.check_user(&name, &password, needed).map(|()| Some(name))
    }

    /// Does `name` with `password` have every permission in `needed` (or `all`)?
    pub fn check_user(&self, name: &str, password: &str, needed: &[Permission]) -> Result<(), Denied> {
        let user = self.users.iter().find(|u| u.name == name && u.name != EVERYONE).ok_or(Denied::UnknownUser)?;
        if !same(user.password.as_bytes(), password.as_bytes()) {
            return Err(Denied::WrongPassword);
        }
        if !self.has(user, needed) {
            return Err(Denied::NotPermitted);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Users {
        let text = br#"[
            {"username": "root", "password": "r00t", "perms": ["all"]},
            {"username": "bob", "password": "secret", "perms": ["query", "status"]},
            {"username": "*", "perms": ["ready"]}
        ]"#;
        Users::parse("test", text).unwrap()
    }

    fn with(user: &str, pass: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, basic_header(user, pass).parse().unwrap());
        h
    }

    #[test]
    fn the_check_order_of_the_spec() {
        let u = users();
        let none = HeaderMap::new();
        assert_eq!(u.check(&none, &[Permission::Ready]), Ok(None));
        assert_eq!(u.check(&none, &[Permission::Query]), Err(Denied::NoCredentials));
        assert_eq!(u.check(&with("bob", "secret"), &[Permission::Query]), Ok(Some("bob".into())));
        assert_eq!(u.check(&with("bob", "secret"), &[Permission::Execute]), Err(Denied::NotPermitted));
        assert_eq!(
            u.check(&with("bob", "secret"), &[Permission::Execute, Permission::Query]),
            Err(Denied::NotPermitted)
        );
        assert_eq!(u.check(&with("bob", "wrong"), &[Permission::Query]), Err(Denied::WrongPassword));
        assert_eq!(u.check(&with("eve", "x"), &[Permission::Query]), Err(Denied::UnknownUser));
        assert_eq!(u.check(&with("root", "r00t"), &[Permission::Execute, Permission::Query]), Ok(Some("root".into())));
        // `*` is not a user one can log in as.
        assert_eq!(u.check(&with("*", ""), &[Permission::Query]), Err(Denied::UnknownUser));
    }

    #[test]
    fn malformed_headers_are_refused() {
        let u = users();
        for bad in
            ["Basic !!!", "Basic Ym9i", "Bearer abc", "Basic", "Basic /w==", &format!("Basic {}", "A".repeat(5000))]
        {
            let mut h = HeaderMap::new();
            h.insert(http::header::AUTHORIZATION, bad.parse().unwrap());
            assert_eq!(u.check(&h, &[Permission::Query]), Err(Denied::Malformed), "{bad}");
        }
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(matches!(Users::parse("f", b"{}"), Err(AuthFileError::Parse { .. })));
        assert!(matches!(
            Users::parse("f", br#"[{"username":"a","password":"b","perms":["wizard"]}]"#),
            Err(AuthFileError::UnknownPermission { .. })
        ));
        assert!(matches!(
            Users::parse("f", br#"[{"username":"a","password":"b"},{"username":"a","password":"c"}]"#),
            Err(AuthFileError::Duplicate { .. })
        ));
    }

    #[test]
    fn the_shipped_example_loads() {
        let u = Users::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/auth.example.json"))).unwrap();
        assert_eq!(u.len(), 4);
        assert!(u.credentials("node").is_some());
    }

    #[test]
    fn comparison_is_exact() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
        assert!(!same(b"", b"a"));
    }
}

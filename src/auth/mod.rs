//! Who may do what: sign-in through an OpenID Connect issuer ([`oidc`]), ID tokens
//! checked ([`jwt`], pure), roles per repository ([`roles`], pure), and the small pure
//! pieces sessions, CSRF tokens and personal tokens are made of (random values, their
//! digests, cookies signed with a key). The pages and the API apply them in
//! `server::access`; the store keeps sessions, personal tokens and the audit trail.

pub mod jwt;
pub mod oidc;
pub mod roles;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub use roles::{Grant, Person, Role, Visibility, Who};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "runway_session";
/// The cookie that ties a sign-in's callback to the browser that started it.
pub const LOGIN_COOKIE: &str = "runway_login";
/// What personal API tokens start with (so a leaked one is recognised).
pub const TOKEN_PREFIX: &str = "rwp_";

/// `n` random bytes from the system's generator, base64url.
pub fn random(n: usize) -> String {
    let mut buf = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut buf).expect("the system's random generator");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// The SHA-256 of a secret, hex: what the store keeps of sessions and tokens.
pub fn digest(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// PKCE's S256 challenge of a verifier.
pub fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn mac(key: &[u8], value: &str) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
    m.update(value.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
}

/// Two secrets compared in constant time.
pub fn same_secret(a: &str, b: &str) -> bool {
    crate::mask::same(a.as_bytes(), b.as_bytes())
}

/// `value` with its MAC under `key`, for a cookie.
pub fn seal(key: &[u8], value: &str) -> String {
    format!("{value}.{}", mac(key, value))
}

/// The value of a sealed cookie, if `key` made its MAC.
pub fn open<'a>(key: &[u8], sealed: &'a str) -> Option<&'a str> {
    let (value, tag) = sealed.rsplit_once('.')?;
    crate::mask::same(tag.as_bytes(), mac(key, value).as_bytes()).then_some(value)
}

/// The value of cookie `name` in a `Cookie:` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie:` value: HttpOnly, SameSite=Lax, Secure when served over https,
/// living `max_age` seconds (0: removed).
pub fn set_cookie(name: &str, value: &str, path: &str, max_age: i64, secure: bool) -> String {
    format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Where to go after signing in: a path on this server, never another site's URL.
pub fn local_path(next: &str) -> String {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(|c| c.is_control() || c == '\\');
    if ok { next.to_string() } else { "/".into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_unchanged() {
        let sealed = seal(b"key one", "abc");
        assert_eq!(open(b"key one", &sealed), Some("abc"));
        assert_eq!(open(b"key two", &sealed), None);
        assert_eq!(open(b"key one", &sealed.replacen("abc", "abd", 1)), None);
        assert_eq!(open(b"key one", "abc"), None);
    }

    #[test]
    fn cookies_are_read_by_name_and_set_as_the_issue_asks() {
        assert_eq!(
            cookie("a=1; runway_session=x.y; b=2", SESSION_COOKIE),
            Some("x.y")
        );
        assert_eq!(cookie("runway_sessionx=1", SESSION_COOKIE), None);
        let c = set_cookie(SESSION_COOKIE, "v", "/", 60, true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.ends_with("Secure"));
        assert!(!set_cookie(SESSION_COOKIE, "v", "/", 60, false).contains("Secure"));
    }

    #[test]
    fn pkce_is_rfc_7636s_example() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn after_sign_in_only_a_local_path() {
        assert_eq!(local_path("/builds/3?repo=o/a"), "/builds/3?repo=o/a");
        assert_eq!(local_path("//evil.example/"), "/");
        assert_eq!(local_path("https://evil.example/"), "/");
        assert_eq!(local_path("/\\evil.example"), "/");
    }
}

//! The OpenID Connect issuer, as runway's client: its discovery document, its published
//! keys (fetched again when a token names a key not seen yet), the authorization URL
//! (code flow with PKCE, state and nonce), the code exchanged at the token endpoint
//! (`client_secret_basic`), the ID token checked ([`super::jwt`]) and userinfo's claims
//! added. HTTP goes through [`Http`], so the flow is tested against a real issuer and
//! its decisions on strings.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Deserialize;

use super::jwt::{self, Claims, Expect, Keys, Refusal};
use crate::mask::percent_encode;

/// How long an answer from the issuer may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the keys may be fetched again for a token naming an unknown key.
const KEYS_REFETCH: Duration = Duration::from_secs(10);
/// The most runway reads of an issuer's answer.
const MAX_ANSWER: u64 = 1 << 20;

/// The issuer's side of HTTP.
pub trait Http: Send + Sync {
    /// GET `url` (with a bearer token): status and body.
    fn get(&self, url: &str, bearer: Option<&str>) -> Result<(u16, Vec<u8>), String>;
    /// POST a form to `url` with HTTP basic authentication: status and body.
    fn post_form(
        &self,
        url: &str,
        basic: &str,
        form: &[(&str, &str)],
    ) -> Result<(u16, Vec<u8>), String>;
}

/// [`Http`] over ureq, with timeouts and a cap on answers.
pub struct Ureq(ureq::Agent);

impl Default for Ureq {
    fn default() -> Self {
        Ureq(crate::http::agent(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                // A connection kept from the last sign-in may have been closed by the
                // issuer since (Node's keep-alive is 5 s): a POST on it is reset, and
                // not retried. Sign-ins are rare: a connection each.
                .max_idle_connections(0)
                .timeout_connect(Some(Duration::from_secs(5)))
                .timeout_global(Some(HTTP_TIMEOUT))
                .build(),
        ))
    }
}

fn read(answer: ureq::http::Response<ureq::Body>) -> Result<(u16, Vec<u8>), String> {
    let code = answer.status().as_u16();
    let body = answer
        .into_body()
        .with_config()
        .limit(MAX_ANSWER)
        .read_to_vec()
        .map_err(|e| e.to_string())?;
    Ok((code, body))
}

impl Http for Ureq {
    fn get(&self, url: &str, bearer: Option<&str>) -> Result<(u16, Vec<u8>), String> {
        let mut req = self.0.get(url).header("Accept", "application/json");
        if let Some(t) = bearer {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        read(req.call().map_err(|e| e.to_string())?)
    }

    fn post_form(
        &self,
        url: &str,
        basic: &str,
        form: &[(&str, &str)],
    ) -> Result<(u16, Vec<u8>), String> {
        let body = form_body(form);
        read(
            self.0
                .post(url)
                .header("Authorization", &format!("Basic {basic}"))
                .header("Accept", "application/json")
                .header("Content-Type", "application/x-www-form-urlencoded")
                .send(body.as_bytes())
                .map_err(|e| e.to_string())?,
        )
    }
}

fn form_body(form: &[(&str, &str)]) -> String {
    form.iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                percent_encode(k, false, true, false),
                percent_encode(v, false, true, false)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// What runway.toml's `[auth]` says, with the client secret read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The issuer URL, exactly as its tokens say it.
    pub issuer: String,
    /// The client id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: String,
    /// The callback (`…/auth/callback`).
    pub redirect_url: String,
    /// The scopes asked for.
    pub scopes: Vec<String>,
}

/// The parts of the discovery document runway uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    /// The issuer (must be the configured one).
    pub issuer: String,
    /// Where the browser signs in.
    pub authorization_endpoint: String,
    /// Where the code is exchanged.
    pub token_endpoint: String,
    /// The published keys.
    pub jwks_uri: String,
    /// Claims beyond the ID token.
    pub userinfo_endpoint: Option<String>,
}

/// Why a sign-in failed.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// The ID token was refused.
    #[error("{0}")]
    Refused(#[from] Refusal),
    /// The issuer could not be asked, or answered something else.
    #[error("{0}")]
    Issuer(String),
}

#[derive(Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
    access_token: Option<String>,
}

/// runway as the issuer's client.
pub struct Client {
    settings: Settings,
    http: Box<dyn Http>,
    discovery: Mutex<Option<Discovery>>,
    keys: Mutex<Option<(Keys, Instant)>>,
}

impl Client {
    /// A client of `settings.issuer` over `http` (nothing asked yet).
    pub fn new(settings: Settings, http: Box<dyn Http>) -> Client {
        Client {
            settings,
            http,
            discovery: Mutex::new(None),
            keys: Mutex::new(None),
        }
    }

    fn json<T: for<'de> Deserialize<'de>>(
        &self,
        what: &str,
        answer: Result<(u16, Vec<u8>), String>,
    ) -> Result<T, SignInError> {
        let (code, body) = answer.map_err(|e| SignInError::Issuer(format!("{what}: {e}")))?;
        if !(200..300).contains(&code) {
            let said = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            return Err(SignInError::Issuer(format!(
                "{what} answered {code}: {}",
                said.trim()
            )));
        }
        serde_json::from_slice(&body)
            .map_err(|e| SignInError::Issuer(format!("{what} answered something else: {e}")))
    }

    /// The issuer's discovery document (asked once, kept once it is right).
    pub fn discovery(&self) -> Result<Discovery, SignInError> {
        if let Some(d) = self.discovery.lock().expect("discovery").clone() {
            return Ok(d);
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.settings.issuer.trim_end_matches('/')
        );
        let d: Discovery =
            self.json("the issuer's discovery document", self.http.get(&url, None))?;
        if d.issuer != self.settings.issuer {
            return Err(SignInError::Issuer(format!(
                "the discovery document at {url} names issuer {:?}, not {:?} as runway.toml says",
                d.issuer, self.settings.issuer
            )));
        }
        *self.discovery.lock().expect("discovery") = Some(d.clone());
        Ok(d)
    }

    /// Where the browser goes to sign in.
    pub fn authorize_url(
        &self,
        state: &str,
        nonce: &str,
        verifier: &str,
    ) -> Result<String, SignInError> {
        let d = self.discovery()?;
        let e = |s: &str| percent_encode(s, false, false, false);
        let sep = if d.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        Ok(format!(
            "{}{sep}response_type=code&client_id={}&redirect_uri={}&scope={}&state={}&nonce={}&code_challenge={}&code_challenge_method=S256",
            d.authorization_endpoint,
            e(&self.settings.client_id),
            e(&self.settings.redirect_url),
            e(&self.settings.scopes.join(" ")),
            e(state),
            e(nonce),
            super::pkce_challenge(verifier),
        ))
    }

    fn keys(&self, jwks_uri: &str, again: bool) -> Result<Keys, SignInError> {
        {
            let held = self.keys.lock().expect("keys");
            if let Some((k, at)) = held.as_ref()
                && (!again || at.elapsed() < KEYS_REFETCH)
            {
                return Ok(k.clone());
            }
        }
        let k: Keys = self.json("the issuer's keys", self.http.get(jwks_uri, None))?;
        *self.keys.lock().expect("keys") = Some((k.clone(), Instant::now()));
        Ok(k)
    }

    /// The code exchanged, the ID token checked against this sign-in's `nonce`, and
    /// userinfo's claims (groups, email) added: who signed in.
    pub fn finish(
        &self,
        code: &str,
        verifier: &str,
        nonce: &str,
        now: i64,
    ) -> Result<Claims, SignInError> {
        let d = self.discovery()?;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            percent_encode(&self.settings.client_id, false, true, false),
            percent_encode(&self.settings.client_secret, false, true, false)
        ));
        let answer: TokenAnswer = self.json(
            "the issuer's token endpoint",
            self.http.post_form(
                &d.token_endpoint,
                &basic,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", code),
                    ("redirect_uri", &self.settings.redirect_url),
                    ("code_verifier", verifier),
                ],
            ),
        )?;
        let token = answer
            .id_token
            .ok_or_else(|| SignInError::Issuer("the token endpoint gave no id_token".into()))?;
        let expect = Expect {
            issuer: &self.settings.issuer,
            audience: &self.settings.client_id,
            nonce,
            now,
        };
        let mut claims = match jwt::verify(&token, &self.keys(&d.jwks_uri, false)?, &expect) {
            // A key the issuer published since: its keys once more (not more often than
            // every few seconds, whatever tokens say).
            Err(Refusal::UnknownKey(_)) => {
                jwt::verify(&token, &self.keys(&d.jwks_uri, true)?, &expect)?
            }
            other => other?,
        };
        if let (Some(url), Some(access)) = (&d.userinfo_endpoint, &answer.access_token) {
            let info: Claims =
                self.json("the issuer's userinfo", self.http.get(url, Some(access)))?;
            // Userinfo about someone else is not about this sign-in.
            if info.sub != claims.sub {
                return Err(SignInError::Issuer(format!(
                    "userinfo is about {:?}, the ID token about {:?}",
                    info.sub, claims.sub
                )));
            }
            if claims.email.is_none() {
                claims.email = info.email;
                claims.email_verified = info.email_verified;
            }
            claims.preferred_username = claims.preferred_username.or(info.preferred_username);
            claims.groups = claims.groups.or(info.groups);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// An issuer's answers by URL (the decisions on strings; the flow itself is tested
    /// against a real issuer in tests/it).
    struct Answers(HashMap<String, (u16, String)>, Mutex<Vec<String>>);

    impl Http for Answers {
        fn get(&self, url: &str, _: Option<&str>) -> Result<(u16, Vec<u8>), String> {
            self.1.lock().expect("asked").push(url.into());
            self.0
                .get(url)
                .map(|(c, b)| (*c, b.clone().into_bytes()))
                .ok_or_else(|| "connection refused".into())
        }
        fn post_form(
            &self,
            url: &str,
            _: &str,
            _: &[(&str, &str)],
        ) -> Result<(u16, Vec<u8>), String> {
            self.get(url, None)
        }
    }

    fn settings() -> Settings {
        Settings {
            issuer: "http://idp".into(),
            client_id: "runway".into(),
            client_secret: "s".into(),
            redirect_url: "http://ci/auth/callback".into(),
            scopes: vec!["openid".into(), "email".into()],
        }
    }

    fn discovery(issuer: &str) -> (u16, String) {
        (
            200,
            serde_json::json!({
                "issuer": issuer, "authorization_endpoint": "http://idp/auth",
                "token_endpoint": "http://idp/token", "jwks_uri": "http://idp/jwks"
            })
            .to_string(),
        )
    }

    #[test]
    fn the_authorization_url_asks_for_a_code_with_pkce_state_and_nonce() {
        let answers = Answers(
            [(
                "http://idp/.well-known/openid-configuration".to_string(),
                discovery("http://idp"),
            )]
            .into(),
            Mutex::default(),
        );
        let c = Client::new(settings(), Box::new(answers));
        let url = c.authorize_url("st", "no", "ver").expect("url");
        assert!(url.starts_with("http://idp/auth?response_type=code&client_id=runway&redirect_uri=http%3A%2F%2Fci%2Fauth%2Fcallback&scope=openid%20email&state=st&nonce=no&code_challenge="), "{url}");
        assert!(url.ends_with("&code_challenge_method=S256"));
    }

    #[test]
    fn a_discovery_document_naming_another_issuer_is_refused() {
        let answers = Answers(
            [(
                "http://idp/.well-known/openid-configuration".to_string(),
                discovery("http://evil"),
            )]
            .into(),
            Mutex::default(),
        );
        let c = Client::new(settings(), Box::new(answers));
        let e = c.discovery().unwrap_err().to_string();
        assert!(e.contains("names issuer \"http://evil\""), "{e}");
    }

    #[test]
    fn a_token_signed_by_a_key_published_since_is_checked_with_the_keys_fetched_again() {
        let (pair, jwk) = super::super::jwt::tests::key();
        let token = super::super::jwt::tests::sign(
            &pair,
            &serde_json::json!({"iss": "http://idp", "aud": "runway", "sub": "s", "exp": 2000, "nonce": "n"}),
        );
        let jwks =
            serde_json::json!({"keys": [{"kty": "RSA", "kid": "k1", "n": jwk.n, "e": jwk.e}]});
        let answers = Answers(
            [
                (
                    "http://idp/.well-known/openid-configuration".to_string(),
                    discovery("http://idp"),
                ),
                (
                    "http://idp/token".to_string(),
                    (200, serde_json::json!({"id_token": token}).to_string()),
                ),
                ("http://idp/jwks".to_string(), (200, jwks.to_string())),
            ]
            .into(),
            Mutex::default(),
        );
        let c = Client::new(settings(), Box::new(answers));
        // Keys held from before, without k1.
        *c.keys.lock().expect("keys") = Some((Keys::default(), Instant::now() - KEYS_REFETCH));
        let claims = c.finish("code", "ver", "n", 1000).expect("signed in");
        assert_eq!(claims.sub, "s");
    }
}

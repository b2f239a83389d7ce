//! ID tokens (pure): a compact JWS split and decoded, its signature checked against the
//! issuer's published keys (JWKS), and its claims checked: issuer, audience, expiry,
//! nonce. Every refusal says why, for the log. `alg: none` and symmetric algorithms are
//! never accepted: an ID token is signed by the issuer's key or it is nothing.

use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use base64::Engine;
use serde::Deserialize;

/// How far clocks may disagree (seconds) on expiry and issue times.
pub const LEEWAY_SECS: i64 = 60;

/// Why an ID token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not three base64url parts of JSON.
    #[error("the ID token is malformed: {0}")]
    Malformed(String),
    /// `none`, a symmetric algorithm, or one runway does not check.
    #[error("the ID token's algorithm {0:?} is not accepted (an issuer's key must sign it)")]
    Algorithm(String),
    /// No published key has its `kid`.
    #[error("no key the issuer publishes has the ID token's kid {0:?}")]
    UnknownKey(String),
    /// The signature is not the issuer's.
    #[error("the ID token's signature is not made by any key the issuer publishes")]
    Signature,
    /// `iss` is another issuer's.
    #[error("the ID token was issued by {got:?}, not by {want:?}")]
    Issuer {
        /// The token's `iss`.
        got: String,
        /// The configured issuer.
        want: String,
    },
    /// `aud` does not name this client.
    #[error("the ID token is for {got}, not for this client ({want:?})")]
    Audience {
        /// The token's `aud`.
        got: String,
        /// The configured client id.
        want: String,
    },
    /// `exp` has passed.
    #[error("the ID token expired at {exp} (now {now})")]
    Expired {
        /// Its `exp`.
        exp: i64,
        /// Now.
        now: i64,
    },
    /// `iat` is in the future.
    #[error("the ID token was issued in the future ({iat}, now {now})")]
    Future {
        /// Its `iat`.
        iat: i64,
        /// Now.
        now: i64,
    },
    /// `nonce` is not the one this sign-in sent (a replayed token, or another sign-in's).
    #[error("the ID token's nonce is not this sign-in's (a replayed or foreign token)")]
    Nonce,
    /// A claim the token must have is missing.
    #[error("the ID token has no {0}")]
    Missing(&'static str),
}

/// One published key (a JWK).
#[derive(Debug, Clone, Deserialize)]
pub struct Jwk {
    /// Its id.
    pub kid: Option<String>,
    /// `RSA`, `EC`, `OKP`.
    pub kty: String,
    /// `sig` or `enc`.
    #[serde(rename = "use")]
    pub use_: Option<String>,
    /// RSA modulus.
    pub n: Option<String>,
    /// RSA exponent.
    pub e: Option<String>,
    /// EC / OKP curve.
    pub crv: Option<String>,
    /// EC x / OKP public key.
    pub x: Option<String>,
    /// EC y.
    pub y: Option<String>,
}

/// The issuer's published keys (`jwks_uri`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Keys {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// What an ID token must say.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// The configured issuer (exactly).
    pub issuer: &'a str,
    /// The client id.
    pub audience: &'a str,
    /// The nonce this sign-in sent.
    pub nonce: &'a str,
    /// Now (Unix seconds).
    pub now: i64,
}

/// The claims runway reads from an ID token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Claims {
    /// The subject.
    #[serde(default)]
    pub sub: String,
    /// Email.
    pub email: Option<String>,
    /// Whether the issuer verified the email.
    pub email_verified: Option<bool>,
    /// Preferred username.
    pub preferred_username: Option<String>,
    /// Groups.
    pub groups: Option<Vec<String>>,
}

impl Claims {
    /// The name a person goes by in grants: email, else preferred_username, else sub.
    /// An email the issuer says it has not verified is not used: on an issuer where
    /// anyone may sign up, anyone could claim a granted address.
    pub fn name(&self) -> String {
        self.email
            .clone()
            .filter(|e| !e.is_empty() && self.email_verified != Some(false))
            .or_else(|| self.preferred_username.clone().filter(|u| !u.is_empty()))
            .unwrap_or_else(|| self.sub.clone())
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

#[derive(Deserialize)]
struct Checked {
    iss: Option<String>,
    aud: Option<serde_json::Value>,
    azp: Option<String>,
    exp: Option<i64>,
    iat: Option<i64>,
    nonce: Option<String>,
}

fn b64(part: &str, what: &str) -> Result<Vec<u8>, Refusal> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| Refusal::Malformed(format!("its {what} is not base64url")))
}

/// The token's claims once its signature, issuer, audience, expiry and nonce are right.
pub fn verify(token: &str, keys: &Keys, expect: &Expect<'_>) -> Result<Claims, Refusal> {
    let parts: Vec<&str> = token.split('.').collect();
    let [head, body, sig] = parts[..] else {
        return Err(Refusal::Malformed(format!("{} parts, not 3", parts.len())));
    };
    let header: Header = serde_json::from_slice(&b64(head, "header")?)
        .map_err(|e| Refusal::Malformed(format!("its header: {e}")))?;
    let alg = algorithm(&header.alg)?;
    let signature = b64(sig, "signature")?;
    let signed = format!("{head}.{body}");
    let candidates: Vec<&Jwk> = keys
        .keys
        .iter()
        .filter(|k| k.use_.as_deref().is_none_or(|u| u == "sig"))
        .filter(|k| match (&header.kid, &k.kid) {
            (Some(want), Some(have)) => want == have,
            (Some(_), None) => true,
            (None, _) => true,
        })
        .collect();
    if candidates.is_empty() {
        return Err(Refusal::UnknownKey(header.kid.unwrap_or_default()));
    }
    if !candidates
        .iter()
        .any(|k| checks(alg, k, signed.as_bytes(), &signature))
    {
        return Err(Refusal::Signature);
    }
    let raw = b64(body, "payload")?;
    let c: Checked =
        serde_json::from_slice(&raw).map_err(|e| Refusal::Malformed(format!("its claims: {e}")))?;
    let claims: Claims =
        serde_json::from_slice(&raw).map_err(|e| Refusal::Malformed(format!("its claims: {e}")))?;
    let iss = c.iss.ok_or(Refusal::Missing("iss"))?;
    if iss != expect.issuer {
        return Err(Refusal::Issuer {
            got: iss,
            want: expect.issuer.into(),
        });
    }
    let auds: Vec<String> = match c.aud {
        Some(serde_json::Value::String(a)) => vec![a],
        Some(serde_json::Value::Array(a)) => a
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => return Err(Refusal::Missing("aud")),
    };
    let for_us = auds.iter().any(|a| a == expect.audience)
        && (auds.len() == 1 || c.azp.as_deref() == Some(expect.audience))
        && c.azp.as_deref().is_none_or(|a| a == expect.audience);
    if !for_us {
        return Err(Refusal::Audience {
            got: format!("{auds:?}"),
            want: expect.audience.into(),
        });
    }
    let exp = c.exp.ok_or(Refusal::Missing("exp"))?;
    if expect.now > exp + LEEWAY_SECS {
        return Err(Refusal::Expired {
            exp,
            now: expect.now,
        });
    }
    if let Some(iat) = c.iat
        && iat > expect.now + LEEWAY_SECS
    {
        return Err(Refusal::Future {
            iat,
            now: expect.now,
        });
    }
    let nonce = c.nonce.ok_or(Refusal::Nonce)?;
    if !crate::mask::same(nonce.as_bytes(), expect.nonce.as_bytes()) {
        return Err(Refusal::Nonce);
    }
    if claims.sub.is_empty() {
        return Err(Refusal::Missing("sub"));
    }
    Ok(claims)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Alg {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Es256,
    Es384,
    EdDsa,
}

fn algorithm(name: &str) -> Result<Alg, Refusal> {
    Ok(match name {
        "RS256" => Alg::Rs256,
        "RS384" => Alg::Rs384,
        "RS512" => Alg::Rs512,
        "PS256" => Alg::Ps256,
        "ES256" => Alg::Es256,
        "ES384" => Alg::Es384,
        "EdDSA" => Alg::EdDsa,
        other => return Err(Refusal::Algorithm(other.into())),
    })
}

/// Whether `key` made `sig` over `msg` with `alg`.
fn checks(alg: Alg, key: &Jwk, msg: &[u8], sig: &[u8]) -> bool {
    let field = |v: &Option<String>| {
        v.as_deref().and_then(|s| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s)
                .ok()
        })
    };
    match alg {
        Alg::Rs256 | Alg::Rs384 | Alg::Rs512 | Alg::Ps256 => {
            let (Some(n), Some(e)) = (field(&key.n), field(&key.e)) else {
                return false;
            };
            if key.kty != "RSA" {
                return false;
            }
            let params: &signature::RsaParameters = match alg {
                Alg::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                Alg::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                Alg::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                _ => &signature::RSA_PSS_2048_8192_SHA256,
            };
            RsaPublicKeyComponents { n: &n, e: &e }
                .verify(params, msg, sig)
                .is_ok()
        }
        Alg::Es256 | Alg::Es384 => {
            let (Some(x), Some(y)) = (field(&key.x), field(&key.y)) else {
                return false;
            };
            let (curve, params): (&str, &'static signature::EcdsaVerificationAlgorithm) =
                if alg == Alg::Es256 {
                    ("P-256", &signature::ECDSA_P256_SHA256_FIXED)
                } else {
                    ("P-384", &signature::ECDSA_P384_SHA384_FIXED)
                };
            if key.kty != "EC" || key.crv.as_deref() != Some(curve) {
                return false;
            }
            let mut point = vec![4u8];
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            UnparsedPublicKey::new(params, point)
                .verify(msg, sig)
                .is_ok()
        }
        Alg::EdDsa => {
            let Some(x) = field(&key.x) else {
                return false;
            };
            key.kty == "OKP"
                && key.crv.as_deref() == Some("Ed25519")
                && UnparsedPublicKey::new(&signature::ED25519, x)
                    .verify(msg, sig)
                    .is_ok()
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aws_lc_rs::rsa::{KeyPair, KeySize};
    use aws_lc_rs::signature::KeyPair as _;

    /// The next DER element of `der` at `at`: its contents, and where the next starts.
    fn element(der: &[u8], at: usize) -> (&[u8], usize) {
        let mut i = at + 1;
        let mut len = der[i] as usize;
        i += 1;
        if len & 0x80 != 0 {
            let n = len & 0x7f;
            len = der[i..i + n].iter().fold(0, |a, b| a << 8 | *b as usize);
            i += n;
        }
        (&der[i..i + len], i + len)
    }

    fn enc(b: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    /// An RSA key and its JWK (kid `k1`).
    pub(crate) fn key() -> (KeyPair, Jwk) {
        let pair = KeyPair::generate(KeySize::Rsa2048).expect("key");
        // PKCS#1: SEQUENCE { INTEGER n, INTEGER e }.
        let (seq, _) = element(pair.public_key().as_ref(), 0);
        let (n, next) = element(seq, 0);
        let (e, _) = element(seq, next);
        let strip = |b: &[u8]| {
            b.iter()
                .skip_while(|x| **x == 0)
                .copied()
                .collect::<Vec<u8>>()
        };
        let jwk = Jwk {
            kid: Some("k1".into()),
            kty: "RSA".into(),
            use_: Some("sig".into()),
            n: Some(enc(&strip(n))),
            e: Some(enc(&strip(e))),
            crv: None,
            x: None,
            y: None,
        };
        (pair, jwk)
    }

    /// `claims` signed RS256 by `pair` under kid `k1`.
    pub(crate) fn sign(pair: &KeyPair, claims: &serde_json::Value) -> String {
        let head = enc(br#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#);
        let body = enc(claims.to_string().as_bytes());
        let msg = format!("{head}.{body}");
        let mut sig = vec![0; pair.public_modulus_len()];
        pair.sign(
            &signature::RSA_PKCS1_SHA256,
            &aws_lc_rs::rand::SystemRandom::new(),
            msg.as_bytes(),
            &mut sig,
        )
        .expect("sign");
        format!("{msg}.{}", enc(&sig))
    }

    fn good() -> serde_json::Value {
        serde_json::json!({
            "iss": "http://127.0.0.1:9/", "aud": "runway", "sub": "rita",
            "exp": 2_000, "iat": 1_000, "nonce": "n1", "email": "rita@example.com",
            "groups": ["dev"]
        })
    }

    const EXPECT: Expect<'static> = Expect {
        issuer: "http://127.0.0.1:9/",
        audience: "runway",
        nonce: "n1",
        now: 1_500,
    };

    fn with(field: &str, v: serde_json::Value) -> serde_json::Value {
        let mut c = good();
        c[field] = v;
        c
    }

    #[test]
    fn a_token_signed_by_the_issuer_for_this_sign_in_is_read() {
        let (pair, jwk) = key();
        let keys = Keys { keys: vec![jwk] };
        let claims = verify(&sign(&pair, &good()), &keys, &EXPECT).expect("valid");
        assert_eq!(claims.name(), "rita@example.com");
        assert_eq!(claims.groups, Some(vec!["dev".to_string()]));
    }

    #[test]
    fn an_unverified_email_does_not_name_anyone() {
        let c = |verified: Option<bool>| Claims {
            sub: "u1".into(),
            email: Some("walt@example.com".into()),
            email_verified: verified,
            preferred_username: Some("mallory".into()),
            groups: None,
        };
        assert_eq!(c(Some(true)).name(), "walt@example.com");
        assert_eq!(c(None).name(), "walt@example.com");
        assert_eq!(c(Some(false)).name(), "mallory");
    }

    #[test]
    fn each_wrong_claim_is_refused_with_its_reason() {
        let (pair, jwk) = key();
        let keys = Keys { keys: vec![jwk] };
        let refused = |c: serde_json::Value| verify(&sign(&pair, &c), &keys, &EXPECT).unwrap_err();
        assert!(matches!(
            refused(with("iss", "http://evil/".into())),
            Refusal::Issuer { .. }
        ));
        assert!(matches!(
            refused(with("aud", "someone-else".into())),
            Refusal::Audience { .. }
        ));
        assert!(matches!(
            refused(with("aud", serde_json::json!(["runway", "other"]))),
            Refusal::Audience { .. }
        ));
        assert!(matches!(
            refused(with("exp", 1_000.into())),
            Refusal::Expired { .. }
        ));
        assert!(matches!(
            refused(with("iat", 9_000.into())),
            Refusal::Future { .. }
        ));
        assert_eq!(refused(with("nonce", "n0".into())), Refusal::Nonce);
        let mut no_nonce = good();
        no_nonce.as_object_mut().expect("object").remove("nonce");
        assert_eq!(refused(no_nonce), Refusal::Nonce);
    }

    #[test]
    fn another_keys_signature_none_and_hmac_are_refused() {
        let (_, jwk) = key();
        let (other, _) = key();
        let keys = Keys { keys: vec![jwk] };
        assert_eq!(
            verify(&sign(&other, &good()), &keys, &EXPECT).unwrap_err(),
            Refusal::Signature
        );
        let body = enc(good().to_string().as_bytes());
        let none = format!("{}.{body}.", enc(br#"{"alg":"none"}"#));
        assert_eq!(
            verify(&none, &keys, &EXPECT).unwrap_err(),
            Refusal::Algorithm("none".into())
        );
        let hs = format!("{}.{body}.{}", enc(br#"{"alg":"HS256"}"#), enc(b"mac"));
        assert!(matches!(
            verify(&hs, &keys, &EXPECT).unwrap_err(),
            Refusal::Algorithm(_)
        ));
        assert!(matches!(
            verify("a.b", &keys, &EXPECT).unwrap_err(),
            Refusal::Malformed(_)
        ));
        let unknown = sign(&other, &good()).replacen(
            &enc(br#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#),
            &enc(br#"{"alg":"RS256","kid":"k9"}"#),
            1,
        );
        assert_eq!(
            verify(&unknown, &keys, &EXPECT).unwrap_err(),
            Refusal::UnknownKey("k9".into())
        );
    }
}

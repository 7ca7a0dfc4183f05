//! A token signer: key id, issuer, subject and Ed25519 signing key; mints scoped tokens.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngCore;
use rand::rngs::OsRng;
use serde::Serialize;

use crate::scope::{MAX_SCOPES_PER_TOKEN, is_valid_scope};
use crate::trust::is_valid_kid;
use crate::{AuthError, TrustedKey};

/// Longest lifetime a minted token may have. Service tokens are minted per call and cached for
/// minutes; a day covers an operator's interactive session. A stolen token dies within this.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Largest PEM key file read; a PKCS#8 Ed25519 key is about 120 bytes.
const MAX_PEM_BYTES: u64 = 16 * 1024;

/// The claims this crate writes. `scope` is space-separated, as in OAuth 2.0.
#[derive(Serialize)]
pub(crate) struct MintedClaims<'a> {
    pub iss: &'a str,
    pub sub: &'a str,
    pub aud: &'a str,
    pub scope: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub jti: String,
}

/// Who signs tokens, and with which key.
pub struct SigningIdentity {
    kid: String,
    issuer: String,
    subject: String,
    key: SigningKey,
    encoding: EncodingKey,
}

impl SigningIdentity {
    /// A new identity with a fresh key from the operating system's random source.
    pub fn generate(
        kid: impl Into<String>,
        issuer: impl Into<String>,
        subject: impl Into<String>,
    ) -> Result<Self, AuthError> {
        Self::from_signing_key(kid, issuer, subject, SigningKey::generate(&mut OsRng))
    }

    /// An identity around an existing key.
    pub fn from_signing_key(
        kid: impl Into<String>,
        issuer: impl Into<String>,
        subject: impl Into<String>,
        key: SigningKey,
    ) -> Result<Self, AuthError> {
        let kid = kid.into();
        if !is_valid_kid(&kid) {
            return Err(AuthError::Key(format!(
                "key id {kid:?} must be 1 to {} printable ASCII characters",
                crate::MAX_KID_LEN
            )));
        }
        let der = key
            .to_pkcs8_der()
            .map_err(|e| AuthError::Key(format!("cannot encode key as PKCS#8: {e}")))?;
        let encoding = EncodingKey::from_ed_der(der.as_bytes());
        Ok(SigningIdentity {
            kid,
            issuer: issuer.into(),
            subject: subject.into(),
            key,
            encoding,
        })
    }

    /// An identity from a PKCS#8 PEM document (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pkcs8_pem(
        kid: impl Into<String>,
        issuer: impl Into<String>,
        subject: impl Into<String>,
        pem: &str,
    ) -> Result<Self, AuthError> {
        // The parser's error never quotes the input, but say nothing of it anyway.
        let key = SigningKey::from_pkcs8_pem(pem)
            .map_err(|_| AuthError::Key("not a PKCS#8 PEM Ed25519 private key".to_owned()))?;
        Self::from_signing_key(kid, issuer, subject, key)
    }

    /// Reads a PKCS#8 PEM key file written by [`SigningIdentity::save_pem`] (or `openssl genpkey
    /// -algorithm ed25519`).
    pub fn load_pem(
        kid: impl Into<String>,
        issuer: impl Into<String>,
        subject: impl Into<String>,
        path: impl AsRef<Path>,
    ) -> Result<Self, AuthError> {
        use std::io::Read;
        let path = path.as_ref();
        let io = |source| AuthError::Io {
            action: "read signing key",
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut pem = String::new();
        file.take(MAX_PEM_BYTES)
            .read_to_string(&mut pem)
            .map_err(io)?;
        Self::from_pkcs8_pem(kid, issuer, subject, &pem)
    }

    /// Writes the key as a PKCS#8 PEM file, readable by the owner only on Unix.
    pub fn save_pem(&self, path: impl AsRef<Path>) -> Result<(), AuthError> {
        use std::io::Write;
        let path = path.as_ref();
        let io = |source| AuthError::Io {
            action: "write signing key",
            path: path.to_owned(),
            source,
        };
        let pem = self
            .key
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|e| AuthError::Key(format!("cannot encode key as PEM: {e}")))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            options.mode(0o600);
            let mut file = options.open(path).map_err(io)?;
            // `mode` applies only when the file is created; tighten an existing file too.
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io)?;
            file.write_all(pem.as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)
        }
        #[cfg(not(unix))]
        {
            let mut file = options.open(path).map_err(io)?;
            file.write_all(pem.as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn verifying_key(&self) -> ed25519_dalek::VerifyingKey {
        self.key.verifying_key()
    }

    /// The public key as base64url without padding (a JWK `x`), as the trust store file holds it.
    pub fn public_key_b64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes())
    }

    /// This identity's trust store entry, allowing the given scope patterns.
    pub fn trust_entry<I, S>(&self, allowed_scopes: I) -> TrustedKey
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        TrustedKey::new(self.kid.clone(), self.verifying_key(), allowed_scopes)
            .with_name(self.subject.clone())
    }

    /// Mints a token for `audience` carrying `scopes`, valid from now for `ttl` (at most
    /// [`MAX_TOKEN_TTL`], whole seconds).
    pub fn mint<S: AsRef<str>>(
        &self,
        audience: &str,
        scopes: &[S],
        ttl: Duration,
    ) -> Result<String, AuthError> {
        self.mint_at(audience, scopes, ttl, crate::unix_now_secs())
    }

    /// [`SigningIdentity::mint`] with an explicit clock, in seconds since the Unix epoch.
    pub fn mint_at<S: AsRef<str>>(
        &self,
        audience: &str,
        scopes: &[S],
        ttl: Duration,
        now_secs: u64,
    ) -> Result<String, AuthError> {
        let ttl_secs = check_ttl(ttl)?;
        let scope = join_scopes(scopes)?;
        if audience.is_empty() {
            return Err(AuthError::Signing("audience is empty".to_owned()));
        }
        let mut jti = [0u8; 16];
        OsRng.fill_bytes(&mut jti);
        let claims = MintedClaims {
            iss: &self.issuer,
            sub: &self.subject,
            aud: audience,
            scope,
            iat: now_secs,
            nbf: now_secs,
            exp: now_secs.saturating_add(ttl_secs),
            jti: URL_SAFE_NO_PAD.encode(jti),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| AuthError::Signing(e.to_string()))
    }
}

/// Checks a requested lifetime: at least one second, at most [`MAX_TOKEN_TTL`].
pub(crate) fn check_ttl(ttl: Duration) -> Result<u64, AuthError> {
    let secs = ttl.as_secs();
    if secs == 0 || ttl > MAX_TOKEN_TTL {
        return Err(AuthError::InvalidTtl {
            max_secs: MAX_TOKEN_TTL.as_secs(),
        });
    }
    Ok(secs)
}

/// Validates scopes and joins them OAuth style, refusing duplicates (a sign of a caller bug).
pub(crate) fn join_scopes<S: AsRef<str>>(scopes: &[S]) -> Result<String, AuthError> {
    if scopes.len() > MAX_SCOPES_PER_TOKEN {
        return Err(AuthError::InvalidScope(format!(
            "more than {MAX_SCOPES_PER_TOKEN} scopes"
        )));
    }
    let mut seen: Vec<&str> = Vec::with_capacity(scopes.len());
    for s in scopes {
        let s = s.as_ref();
        if !is_valid_scope(s) || seen.contains(&s) {
            return Err(AuthError::InvalidScope(s.to_owned()));
        }
        seen.push(s);
    }
    Ok(seen.join(" "))
}

impl fmt::Debug for SigningIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningIdentity")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .field("subject", &self.subject)
            .field("public_key", &self.public_key_b64())
            .field("key", &"[redacted]")
            .finish()
    }
}

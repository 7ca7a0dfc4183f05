//! L402 challenges: the invoice inside a `WWW-Authenticate` header.
//!
//! An L402 server answers `402 Payment Required` with
//! `WWW-Authenticate: L402 macaroon="<base64>", invoice="<bolt11>"` (bLIP-26; older servers say
//! `LSAT`). Treasury pays the invoice; the caller keeps the macaroon and presents
//! `Authorization: L402 <macaroon>:<preimage>` with the preimage of the payment. Treasury never
//! stores or logs the macaroon: it is a bearer credential.
//!
//! The header is parsed as RFC 9110 auth-params: the scheme, then comma-separated
//! `name=value` pairs, names case-insensitive, values tokens or quoted strings (with `\`
//! escapes). Several challenges in one header are allowed; the first L402 (or LSAT) one is used.

/// Longest accepted header value: a macaroon of a few KiB plus an invoice.
pub const MAX_CHALLENGE_LEN: usize = 16 * 1024;

/// The parts of a challenge treasury uses. `Debug` leaves the macaroon out.
#[derive(Clone, PartialEq, Eq)]
pub struct Challenge {
    pub invoice: String,
    macaroon_len: usize,
}

impl std::fmt::Debug for Challenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenge")
            .field("invoice", &self.invoice)
            .field("macaroon", &format_args!("<{} bytes>", self.macaroon_len))
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    #[error("the challenge is empty or longer than {MAX_CHALLENGE_LEN} bytes")]
    Length,
    #[error("no L402 challenge in the header")]
    NoL402,
    #[error("the challenge is not a list of name=value parameters")]
    Syntax,
    #[error("the challenge has no {0}")]
    Missing(&'static str),
    #[error("the challenge names {0} twice")]
    Duplicate(String),
}

/// Parses the value of a `WWW-Authenticate` header and returns its L402 challenge.
pub fn parse(header: &str) -> Result<Challenge, ChallengeError> {
    if header.trim().is_empty() || header.len() > MAX_CHALLENGE_LEN {
        return Err(ChallengeError::Length);
    }
    let mut p = Parser {
        s: header.as_bytes(),
        i: 0,
    };
    loop {
        p.skip_ws_and_commas();
        if p.done() {
            return Err(ChallengeError::NoL402);
        }
        let scheme = p.token().ok_or(ChallengeError::Syntax)?;
        let is_l402 = scheme.eq_ignore_ascii_case("L402") || scheme.eq_ignore_ascii_case("LSAT");
        let params = p.params()?;
        if !is_l402 {
            continue;
        }
        let mut macaroon = None;
        let mut invoice = None;
        for (name, value) in params {
            let slot = match name.to_ascii_lowercase().as_str() {
                "macaroon" => &mut macaroon,
                "invoice" => &mut invoice,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(ChallengeError::Duplicate(name.to_ascii_lowercase()));
            }
        }
        let macaroon = macaroon
            .filter(|m: &String| !m.is_empty())
            .ok_or(ChallengeError::Missing("macaroon"))?;
        let invoice = invoice
            .filter(|i: &String| !i.is_empty())
            .ok_or(ChallengeError::Missing("invoice"))?;
        return Ok(Challenge {
            invoice,
            macaroon_len: macaroon.len(),
        });
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl Parser<'_> {
    fn done(&self) -> bool {
        self.i >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn skip_ws_and_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
    }

    fn token(&mut self) -> Option<String> {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    /// A token68 value (base64 may end in `=`), so `token` plus trailing `=` and `/`.
    fn value_token(&mut self) -> Option<String> {
        let start = self.i;
        while self
            .peek()
            .is_some_and(|b| is_tchar(b) || b == b'=' || b == b'/')
        {
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn quoted(&mut self) -> Result<String, ChallengeError> {
        // The opening quote was seen.
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(ChallengeError::Syntax),
                Some(b'"') => {
                    self.i += 1;
                    return String::from_utf8(out).map_err(|_| ChallengeError::Syntax);
                }
                Some(b'\\') => {
                    self.i += 1;
                    out.push(self.peek().ok_or(ChallengeError::Syntax)?);
                    self.i += 1;
                }
                Some(b) if b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80 => {
                    out.push(b);
                    self.i += 1;
                }
                Some(_) => return Err(ChallengeError::Syntax),
            }
        }
    }

    /// `name=value` pairs up to the end or the next challenge's scheme (a token not followed by
    /// `=`).
    fn params(&mut self) -> Result<Vec<(String, String)>, ChallengeError> {
        let mut out = Vec::new();
        loop {
            self.skip_ws_and_commas();
            if self.done() {
                return Ok(out);
            }
            let save = self.i;
            let name = self.token().ok_or(ChallengeError::Syntax)?;
            self.skip_ws();
            if self.peek() != Some(b'=') {
                // The next challenge starts here.
                self.i = save;
                return Ok(out);
            }
            self.i += 1;
            self.skip_ws();
            let value = if self.peek() == Some(b'"') {
                self.quoted()?
            } else {
                self.value_token().ok_or(ChallengeError::Syntax)?
            };
            out.push((name, value));
            self.skip_ws();
            match self.peek() {
                None | Some(b',') => {}
                Some(_) => return Err(ChallengeError::Syntax),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn parses_challenges_as_servers_send_them() {
        for (header, invoice) in [
            ("L402 macaroon=\"AgEE\", invoice=\"lnbcrt1\"", "lnbcrt1"),
            ("L402 invoice=\"lnbcrt2\", macaroon=\"AgEE==\"", "lnbcrt2"),
            ("l402 MACAROON=AgEE==,INVOICE=lnbcrt3", "lnbcrt3"),
            ("LSAT macaroon=\"AgEE\", invoice=\"lnbcrt4\"", "lnbcrt4"),
            (
                "Bearer realm=\"api\", L402 macaroon=\"AgEE\", invoice=\"lnbcrt5\", version=\"0\"",
                "lnbcrt5",
            ),
            (
                "L402   macaroon = \"Ag\\\"EE\" ,  invoice=\"lnbcrt6\"",
                "lnbcrt6",
            ),
        ] {
            assert_eq!(parse(header).unwrap().invoice, invoice, "{header}");
        }
    }

    #[test]
    fn refuses_anything_else_with_a_reason() {
        for (header, want) in [
            ("", ChallengeError::Length),
            ("Bearer realm=\"x\"", ChallengeError::NoL402),
            ("L402 macaroon=\"AgEE\"", ChallengeError::Missing("invoice")),
            (
                "L402 invoice=\"lnbcrt1\"",
                ChallengeError::Missing("macaroon"),
            ),
            (
                "L402 macaroon=\"\", invoice=\"lnbcrt1\"",
                ChallengeError::Missing("macaroon"),
            ),
            (
                "L402 macaroon=\"AgEE\", invoice=\"lnbcrt1",
                ChallengeError::Syntax,
            ),
            (
                "L402 macaroon=\"AgEE\" invoice=\"x\"",
                ChallengeError::Syntax,
            ),
            (
                "L402 macaroon=\"a\", invoice=\"x\", invoice=\"y\"",
                ChallengeError::Duplicate("invoice".into()),
            ),
        ] {
            assert_eq!(parse(header).unwrap_err(), want, "{header}");
        }
        assert_eq!(
            parse(&"x".repeat(MAX_CHALLENGE_LEN + 1)).unwrap_err(),
            ChallengeError::Length
        );
    }

    #[test]
    fn debug_never_shows_the_macaroon() {
        let c = parse("L402 macaroon=\"SECRETMAC\", invoice=\"lnbcrt1\"").unwrap();
        assert!(!format!("{c:?}").contains("SECRETMAC"));
    }
}

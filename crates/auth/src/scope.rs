//! Scope strings and the trust store's scope patterns.
//!
//! A scope is an OAuth 2.0 scope token (RFC 6749 section 3.3) such as `treasury:pay` or
//! `wallet:read`, at most [`MAX_SCOPE_LEN`] bytes, without `*`. A pattern in a trust store entry
//! is either a scope (exact match), `*` (any scope), or a prefix ending in `:*` such as `hydra:*`
//! (any scope in that namespace). Tokens carry concrete scopes only; wildcards exist only on the
//! verifying side, so a token can never grant more than its list says.

/// Longest accepted scope, in bytes. Real scopes are `service:verb` pairs well under this; the
/// bound keeps tokens and error messages small.
pub const MAX_SCOPE_LEN: usize = 64;

/// Most scopes one token may carry. The suite's whole scope vocabulary is smaller than this, so a
/// longer list is a bug or an attack on the verifier's time.
pub const MAX_SCOPES_PER_TOKEN: usize = 32;

/// Whether `scope` is a concrete scope: 1 to [`MAX_SCOPE_LEN`] bytes of the RFC 6749
/// `scope-token` alphabet (printable ASCII except space, `"` and `\`), and no `*`.
pub fn is_valid_scope(scope: &str) -> bool {
    !scope.is_empty()
        && scope.len() <= MAX_SCOPE_LEN
        && scope
            .bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E) && b != b'*')
}

/// Whether `pattern` is a valid trust store pattern: `*`, `namespace:*`, or a concrete scope.
pub(crate) fn is_valid_pattern(pattern: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) => prefix.ends_with(':') && prefix.len() > 1 && is_valid_scope(prefix),
        None => is_valid_scope(pattern),
    }
}

/// Whether the trust store pattern `pattern` allows the concrete scope `scope`.
pub fn scope_pattern_allows(pattern: &str, scope: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) => scope.len() > prefix.len() && scope.starts_with(prefix),
        None => pattern == scope,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_service_scopes_and_refuses_wildcards_and_spaces() {
        for ok in [
            "treasury:pay",
            "hydra:liquidity",
            "wallet:read",
            "ops:apply",
        ] {
            assert!(is_valid_scope(ok), "{ok}");
        }
        for bad in ["", "a b", "hydra:*", "*", "quo\"te", "back\\slash", "é"] {
            assert!(!is_valid_scope(bad), "{bad:?}");
        }
        assert!(!is_valid_scope(&"a".repeat(MAX_SCOPE_LEN + 1)));
    }

    #[test]
    fn patterns_match_exactly_by_namespace_or_all() {
        assert!(scope_pattern_allows("*", "wallet:pay"));
        assert!(scope_pattern_allows("hydra:*", "hydra:liquidity"));
        assert!(!scope_pattern_allows("hydra:*", "hydra:"));
        assert!(!scope_pattern_allows("hydra:*", "hydrant:x"));
        assert!(!scope_pattern_allows("hydra:*", "treasury:pay"));
        assert!(scope_pattern_allows("wallet:read", "wallet:read"));
        assert!(!scope_pattern_allows("wallet:read", "wallet:pay"));
    }

    #[test]
    fn only_trailing_namespace_wildcards_are_patterns() {
        assert!(is_valid_pattern("*"));
        assert!(is_valid_pattern("hydra:*"));
        assert!(is_valid_pattern("wallet:pay"));
        assert!(!is_valid_pattern("hydra*"));
        assert!(!is_valid_pattern(":*"));
        assert!(!is_valid_pattern("hy*dra:x"));
        assert!(!is_valid_pattern("**"));
    }
}

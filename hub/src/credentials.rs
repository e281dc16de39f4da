//! Bearer tokens: made from 256 random bits, stored only as SHA-256 hashes, compared in constant time.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A fresh token: 32 random bytes, hex encoded.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What the store keeps instead of the token. Tokens carry 256 bits of entropy, so a plain
/// hash is enough: there is nothing to brute-force that a slow hash would protect.
pub fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Constant-time comparison of a presented token against a stored hash.
pub fn token_matches(presented: &str, stored_hash: &[u8]) -> bool {
    let presented = hash_token(presented);
    presented.ct_eq(stored_hash).into()
}

/// Extracts the token from an `authorization: Bearer …` value.
pub fn bearer(value: &str) -> Option<&str> {
    let token = value.strip_prefix("Bearer ")?.trim();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_256_bits() {
        let a = new_token();
        assert_eq!(a.len(), 64);
        assert_ne!(a, new_token());
    }

    #[test]
    fn only_the_right_token_matches() {
        let token = new_token();
        let stored = hash_token(&token);
        assert!(token_matches(&token, &stored));
        assert!(!token_matches(&new_token(), &stored));
        assert!(!token_matches("", &stored));
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Basic abc"), None);
    }
}

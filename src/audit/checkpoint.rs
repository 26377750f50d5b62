//! Signed checkpoints: the C2SP tlog-checkpoint format (<https://c2sp.org/tlog-checkpoint>)
//! carried in a C2SP signed note (<https://c2sp.org/signed-note>), signed with Ed25519.
//!
//! A checkpoint commits to a log's tree size and root hash:
//!
//! ```text
//! <origin>
//! <tree size, decimal>
//! <root hash, standard base64>
//!
//! — <key name> <base64(key id || Ed25519 signature)>
//! ```
//!
//! The signature covers the body (the first three lines, final newline included, not the blank
//! line). The key id is the first four bytes of `SHA-256(key name || "\n" || 0x01 || public key)`
//! and the published verifier key is `<name>+<key id, 8 hex digits>+<base64(0x01 || public key)>`,
//! both exactly as `golang.org/x/mod/sumdb/note` defines them, so Go-ecosystem tooling (and
//! witnesses) can check our checkpoints.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use sha2::{Digest, Sha256};

/// Signature algorithm byte for Ed25519 in key ids and verifier keys.
const ALG_ED25519: u8 = 0x01;
/// Every signature line starts with U+2014 EM DASH and a space.
const SIG_LINE_PREFIX: &str = "\u{2014} ";
/// The signed-note limit on signature lines in one note.
const MAX_SIGNATURES: usize = 100;
const ED25519_PUBLIC_KEY_LEN: usize = 32;
const ED25519_SIGNATURE_LEN: usize = 64;

/// A log checkpoint: the log's origin (its identity), tree size and root hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub tree_size: u64,
    pub root_hash: [u8; 32],
}

impl Checkpoint {
    /// The checkpoint body: `<origin>\n<tree size>\n<base64 root hash>\n`.
    ///
    /// The origin is written as is; it should satisfy the same rule as key names (non-empty,
    /// no whitespace, no `+`), otherwise [`Checkpoint::parse_body`] rejects the result.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.tree_size,
            B64.encode(self.root_hash)
        )
    }

    /// Parses a checkpoint body as written by [`Checkpoint::body`]. Extension lines (allowed by
    /// the C2SP format after the root hash) are rejected: our logs never write them and a
    /// [`Checkpoint`] could not represent what they commit to.
    pub fn parse_body(text: &str) -> Result<Checkpoint, NoteError> {
        let bad = |why: String| NoteError::MalformedCheckpoint(why);
        let rest = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("the body does not end with a newline".into()))?;
        let lines: Vec<&str> = rest.split('\n').collect();
        if lines.len() < 3 {
            return Err(bad(format!(
                "the body has {} line(s); a checkpoint has 3 (origin, tree size, root hash)",
                lines.len()
            )));
        }
        if lines.len() > 3 {
            return Err(bad(format!(
                "the body has {} extension line(s) after the root hash, which are not supported",
                lines.len() - 3
            )));
        }
        let origin = lines[0];
        if !valid_name(origin) {
            return Err(bad(format!(
                "origin {origin:?} must be non-empty, without whitespace or '+'"
            )));
        }
        let tree_size = parse_decimal(lines[1]).ok_or_else(|| {
            bad(format!(
                "tree size {:?} is not a decimal number without leading zeros that fits in 64 bits",
                lines[1]
            ))
        })?;
        let root_hash: [u8; 32] = B64
            .decode(lines[2])
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| {
                bad(format!(
                    "root hash {:?} is not 32 bytes in padded standard base64",
                    lines[2]
                ))
            })?;
        Ok(Checkpoint {
            origin: origin.to_string(),
            tree_size,
            root_hash,
        })
    }
}

/// ASCII decimal, no sign, no leading zeros (except "0" itself), no overflow.
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

/// Key names and origins: non-empty, no whitespace, no '+' (the verifier key separator); we
/// also refuse control characters, which a note may not contain anywhere.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

fn check_name(name: &str) -> Result<(), NoteError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(NoteError::BadName {
            name: name.to_string(),
        })
    }
}

/// First four bytes, big-endian, of `SHA-256(name || "\n" || 0x01 || public key)`.
fn key_id(name: &str, public_key: &[u8]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ALG_ED25519]);
    h.update(public_key);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// `<name>+<key id>+<base64(0x01 || public key)>`.
fn format_verifier_key(name: &str, id: u32, public_key: &[u8]) -> String {
    let mut key = Vec::with_capacity(1 + public_key.len());
    key.push(ALG_ED25519);
    key.extend_from_slice(public_key);
    format!("{name}+{id:08x}+{}", B64.encode(key))
}

/// Signs checkpoints with one Ed25519 key under one key name.
pub struct NoteSigner {
    name: String,
    key_id: u32,
    key_pair: Ed25519KeyPair,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner")
            .field("verifier_key", &self.verifier_key())
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// A new random Ed25519 private key, as PKCS#8 (v2) DER.
    pub fn generate_pkcs8() -> Result<Vec<u8>, NoteError> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| NoteError::Key("could not generate an Ed25519 key pair".into()))?;
        Ok(doc.as_ref().to_vec())
    }

    /// A signer for key name `name` from an Ed25519 private key in PKCS#8 DER (v2 as
    /// [`NoteSigner::generate_pkcs8`] writes it, or v1 as e.g. OpenSSL writes it).
    pub fn from_pkcs8(name: &str, pkcs8_der: &[u8]) -> Result<NoteSigner, NoteError> {
        check_name(name)?;
        let key_pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8_der)
            .map_err(|e| NoteError::Key(format!("not a PKCS#8 Ed25519 private key: {e}")))?;
        Ok(Self::from_key_pair(name, key_pair))
    }

    fn from_key_pair(name: &str, key_pair: Ed25519KeyPair) -> NoteSigner {
        NoteSigner {
            name: name.to_string(),
            key_id: key_id(name, key_pair.public_key().as_ref()),
            key_pair,
        }
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The verifier key to publish: `<name>+<key id>+<base64(0x01 || public key)>`.
    pub fn verifier_key(&self) -> String {
        format_verifier_key(&self.name, self.key_id, self.key_pair.public_key().as_ref())
    }

    /// The signed note for `checkpoint`: its body, a blank line and our signature line.
    pub fn sign(&self, checkpoint: &Checkpoint) -> String {
        self.sign_text(&checkpoint.body())
    }

    /// Signs any note text (which must end with a newline).
    fn sign_text(&self, text: &str) -> String {
        let signature = self.key_pair.sign(text.as_bytes());
        let mut blob = Vec::with_capacity(4 + ED25519_SIGNATURE_LEN);
        blob.extend_from_slice(&self.key_id.to_be_bytes());
        blob.extend_from_slice(signature.as_ref());
        format!(
            "{text}\n{SIG_LINE_PREFIX}{} {}\n",
            self.name,
            B64.encode(blob)
        )
    }
}

/// Checks signed checkpoints against one published Ed25519 verifier key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key_id: u32,
    public_key: [u8; ED25519_PUBLIC_KEY_LEN],
}

impl NoteVerifier {
    /// Parses a verifier key `<name>+<8 lowercase hex digits key id>+<base64(0x01 || key)>`,
    /// checking that the key id matches the name and key.
    pub fn parse(verifier_key: &str) -> Result<NoteVerifier, NoteError> {
        let bad = |why: String| NoteError::BadVerifierKey(why);
        // The base64 key may itself contain '+', so split off only the first two fields.
        let mut parts = verifier_key.splitn(3, '+');
        let (name, id_hex, key_b64) = match (parts.next(), parts.next(), parts.next()) {
            (Some(n), Some(i), Some(k)) => (n, i, k),
            _ => {
                return Err(bad(
                    "expected <name>+<key id>+<base64 key>, with two '+' separators".into(),
                ))
            }
        };
        if !valid_name(name) {
            return Err(bad(format!(
                "key name {name:?} must be non-empty, without whitespace or '+'"
            )));
        }
        if id_hex.len() != 8
            || !id_hex
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(bad(format!(
                "key id {id_hex:?} is not 8 lowercase hexadecimal digits"
            )));
        }
        let id = u32::from_str_radix(id_hex, 16)
            .map_err(|_| bad(format!("key id {id_hex:?} is not hexadecimal")))?;
        let key = B64
            .decode(key_b64)
            .map_err(|_| bad("the key is not padded standard base64".into()))?;
        match key.first() {
            Some(&ALG_ED25519) => {}
            Some(alg) => {
                return Err(bad(format!(
                    "unsupported signature algorithm {alg:#04x} (only Ed25519, 0x01)"
                )))
            }
            None => return Err(bad("the key is empty".into())),
        }
        let public_key: [u8; ED25519_PUBLIC_KEY_LEN] = key[1..].try_into().map_err(|_| {
            bad(format!(
                "an Ed25519 public key is {ED25519_PUBLIC_KEY_LEN} bytes, this one is {}",
                key.len() - 1
            ))
        })?;
        let expected = key_id(name, &public_key);
        if expected != id {
            return Err(bad(format!(
                "key id {id:08x} does not match the name and key (they give {expected:08x})"
            )));
        }
        Ok(NoteVerifier {
            name: name.to_string(),
            key_id: id,
            public_key,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `<name>+<key id>`, how errors name this key.
    fn key_label(&self) -> String {
        format!("{}+{:08x}", self.name, self.key_id)
    }

    /// Checks that `note` carries a valid signature by this key and returns the checkpoint it
    /// signs. Signatures by other keys are ignored; a signature line that claims to be by this
    /// key (same name and key id) but does not verify is an error.
    pub fn verify(&self, note: &str) -> Result<Checkpoint, NoteError> {
        let text = self.open(note)?;
        Checkpoint::parse_body(text)
    }

    /// Parses a signed note, verifies this key's signature and returns the signed text.
    fn open<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        let bad = |why: String| NoteError::MalformedNote(why);
        if let Some(c) = note.chars().find(|&c| c.is_control() && c != '\n') {
            return Err(bad(format!("control character {c:?} in the note")));
        }
        let split = note
            .rfind("\n\n")
            .ok_or_else(|| bad("no blank line between the text and the signatures".into()))?;
        let text = &note[..split + 1];
        let sigs = &note[split + 2..];
        if sigs.is_empty() {
            return Err(bad("no signature lines after the blank line".into()));
        }
        let sigs = sigs
            .strip_suffix('\n')
            .ok_or_else(|| bad("the last signature line does not end with a newline".into()))?;

        // Parse every line first, so a malformed note is rejected as such whatever it holds.
        let mut ours = Vec::new();
        for (i, line) in sigs.split('\n').enumerate() {
            let n = i + 1;
            if n > MAX_SIGNATURES {
                return Err(bad(format!("more than {MAX_SIGNATURES} signature lines")));
            }
            let rest = line.strip_prefix(SIG_LINE_PREFIX).ok_or_else(|| {
                bad(format!(
                    "signature line {n} does not start with an em dash (U+2014) and a space"
                ))
            })?;
            let (name, b64) = rest.split_once(' ').ok_or_else(|| {
                bad(format!(
                    "signature line {n} is not '\u{2014} <key name> <base64 signature>'"
                ))
            })?;
            if !valid_name(name) {
                return Err(bad(format!("signature line {n} has an invalid key name")));
            }
            let blob = B64
                .decode(b64)
                .map_err(|_| bad(format!("signature line {n} is not padded standard base64")))?;
            if blob.len() < 5 {
                return Err(bad(format!(
                    "signature line {n} is too short to hold a key id and a signature"
                )));
            }
            let id = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]);
            if name == self.name && id == self.key_id {
                ours.push(blob);
            }
        }

        if ours.is_empty() {
            return Err(NoteError::NoSignature {
                key: self.key_label(),
            });
        }
        let key = UnparsedPublicKey::new(&ED25519, &self.public_key);
        for blob in &ours {
            let sig = &blob[4..];
            if sig.len() != ED25519_SIGNATURE_LEN || key.verify(text.as_bytes(), sig).is_err() {
                return Err(NoteError::BadSignature {
                    key: self.key_label(),
                });
            }
        }
        Ok(text)
    }
}

/// Why a checkpoint or note could not be parsed, signed or verified.
#[derive(Debug, thiserror::Error)]
pub enum NoteError {
    #[error("malformed signed note: {0}")]
    MalformedNote(String),
    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(String),
    #[error("the note has no signature by key {key}")]
    NoSignature { key: String },
    #[error("the note's signature by key {key} is invalid")]
    BadSignature { key: String },
    #[error("malformed verifier key: {0}")]
    BadVerifierKey(String),
    #[error("invalid key name {name:?}: it must be non-empty, without whitespace or '+'")]
    BadName { name: String },
    #[error("Ed25519 key: {0}")]
    Key(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "jisr.example.gov/audit/node-1".into(),
            tree_size: 1234,
            root_hash: Sha256::digest(b"some root").into(),
        }
    }

    fn signer(name: &str) -> NoteSigner {
        let der = NoteSigner::generate_pkcs8().unwrap();
        NoteSigner::from_pkcs8(name, &der).unwrap()
    }

    /// Replaces line `i` (0-based) of `note`.
    fn replace_line(note: &str, i: usize, with: &str) -> String {
        let mut lines: Vec<&str> = note.split('\n').collect();
        lines[i] = with;
        lines.join("\n")
    }

    /// Applies `f` to the decoded `key id || signature` blob of the (single) signature line.
    fn mangle_signature(note: &str, f: impl FnOnce(&mut Vec<u8>)) -> String {
        let (head, line) = note.trim_end_matches('\n').rsplit_once('\n').unwrap();
        let (name_part, b64) = line.rsplit_once(' ').unwrap();
        let mut blob = B64.decode(b64).unwrap();
        f(&mut blob);
        format!("{head}\n{name_part} {}\n", B64.encode(blob))
    }

    #[test]
    fn body_has_the_documented_shape_and_parses_back() {
        let cp = Checkpoint {
            origin: "example.com/log".into(),
            tree_size: 0,
            root_hash: [0u8; 32],
        };
        assert_eq!(
            cp.body(),
            "example.com/log\n0\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
        );
        assert_eq!(Checkpoint::parse_body(&cp.body()).unwrap(), cp);
        let cp = checkpoint();
        assert_eq!(Checkpoint::parse_body(&cp.body()).unwrap(), cp);
        let big = Checkpoint {
            tree_size: u64::MAX,
            ..checkpoint()
        };
        assert_eq!(Checkpoint::parse_body(&big.body()).unwrap(), big);
    }

    #[test]
    fn parse_body_rejects_malformed_bodies() {
        let root = B64.encode([7u8; 32]);
        let bad_bodies = [
            String::new(),
            "origin\n".to_string(),
            "origin\n5\n".to_string(),
            format!("origin\n5\n{root}"), // no final newline
            format!("origin\n5\n{root}\nextension\n"), // extension line
            format!("\n5\n{root}\n"),     // empty origin
            format!("my origin\n5\n{root}\n"), // whitespace
            format!("a+b\n5\n{root}\n"),  // '+'
            format!("origin\n12a\n{root}\n"),
            format!("origin\n-1\n{root}\n"),
            format!("origin\n+5\n{root}\n"),
            format!("origin\n05\n{root}\n"),
            format!("origin\n\n{root}\n"),
            format!("origin\n 5\n{root}\n"),
            format!("origin\n18446744073709551616\n{root}\n"), // u64::MAX + 1
            format!("origin\n5\n{}\n", B64.encode([7u8; 31])),
            format!("origin\n5\n{}\n", B64.encode([7u8; 33])),
            format!("origin\n5\n{}\n", root.trim_end_matches('=')), // unpadded
            "origin\n5\nnot base64!\n".to_string(),
            format!("origin\n5\n{}\n", hex::encode([7u8; 32])),
        ];
        for body in bad_bodies {
            let err = Checkpoint::parse_body(&body).unwrap_err();
            assert!(
                matches!(err, NoteError::MalformedCheckpoint(_)),
                "{body:?}: {err}"
            );
        }
        assert!(Checkpoint::parse_body(&format!("origin\n5\n{root}\n")).is_ok());
    }

    #[test]
    fn sign_then_verify_round_trips() {
        let s = signer("jisr-node-1");
        let cp = checkpoint();
        let note = s.sign(&cp);
        assert!(note.starts_with(&format!("{}\n\u{2014} jisr-node-1 ", cp.body())));
        assert!(note.ends_with('\n'));
        let v = NoteVerifier::parse(&s.verifier_key()).unwrap();
        assert_eq!(v.name(), "jisr-node-1");
        assert_eq!(v.verify(&note).unwrap(), cp);
        // The signature line holds the key id and a 64-byte signature.
        let line = note.lines().last().unwrap();
        let blob = B64.decode(line.rsplit_once(' ').unwrap().1).unwrap();
        assert_eq!(blob.len(), 4 + 64);
        assert_eq!(blob[..4], s.key_id.to_be_bytes());
    }

    #[test]
    fn changed_contents_are_rejected() {
        let s = signer("jisr-node-1");
        let v = NoteVerifier::parse(&s.verifier_key()).unwrap();
        let cp = checkpoint();
        let note = s.sign(&cp);

        let other_root = B64.encode(<[u8; 32]>::from(Sha256::digest(b"another root")));
        let tampered = [
            ("size", replace_line(&note, 1, "1235")),
            ("root", replace_line(&note, 2, &other_root)),
            (
                "origin",
                replace_line(&note, 0, "jisr.example.gov/audit/node-2"),
            ),
        ];
        for (what, bad) in tampered {
            assert_ne!(bad, note);
            let err = v.verify(&bad).unwrap_err();
            assert!(
                matches!(err, NoteError::BadSignature { .. }),
                "changed {what}: {err}"
            );
        }

        // One byte of the signature itself.
        for i in [4usize, 30, 67] {
            let bad = mangle_signature(&note, |b| b[i] ^= 1);
            let err = v.verify(&bad).unwrap_err();
            assert!(
                matches!(err, NoteError::BadSignature { .. }),
                "byte {i}: {err}"
            );
        }
        // A changed key id: the line is then not by our key at all.
        let bad = mangle_signature(&note, |b| b[0] ^= 1);
        assert!(matches!(
            v.verify(&bad).unwrap_err(),
            NoteError::NoSignature { .. }
        ));
        // A truncated signature.
        let bad = mangle_signature(&note, |b| b.truncate(40));
        assert!(matches!(
            v.verify(&bad).unwrap_err(),
            NoteError::BadSignature { .. }
        ));
    }

    #[test]
    fn a_signature_by_another_key_with_the_same_name_is_rejected() {
        let ours = signer("jisr-node-1");
        let impostor = signer("jisr-node-1");
        let v = NoteVerifier::parse(&ours.verifier_key()).unwrap();
        let note = impostor.sign(&checkpoint());
        let err = v.verify(&note).unwrap_err();
        assert!(matches!(err, NoteError::NoSignature { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!("the note has no signature by key {}", v.key_label())
        );
        // Even when the impostor copies our key id into its line.
        let forged = mangle_signature(&note, |b| {
            b[..4].copy_from_slice(&ours.key_id.to_be_bytes())
        });
        let err = v.verify(&forged).unwrap_err();
        assert!(matches!(err, NoteError::BadSignature { .. }), "{err}");
        // A note signed by both verifies with either key.
        let both = format!(
            "{}{}",
            ours.sign(&checkpoint()),
            note.rsplit_once("\n\n").unwrap().1
        );
        assert_eq!(v.verify(&both).unwrap(), checkpoint());
        let vi = NoteVerifier::parse(&impostor.verifier_key()).unwrap();
        assert_eq!(vi.verify(&both).unwrap(), checkpoint());
    }

    #[test]
    fn a_note_without_our_signature_line_is_rejected() {
        let s = signer("jisr-node-1");
        let v = NoteVerifier::parse(&s.verifier_key()).unwrap();
        let cp = checkpoint();
        let note = s.sign(&cp);
        let body = cp.body();
        // Signature line removed (blank line kept), and removed with the blank line.
        for bad in [format!("{body}\n"), body.clone()] {
            let err = v.verify(&bad).unwrap_err();
            assert!(matches!(err, NoteError::MalformedNote(_)), "{bad:?}: {err}");
        }
        // Only someone else's signature.
        let other = signer("someone-else");
        let err = v.verify(&other.sign(&cp)).unwrap_err();
        assert!(matches!(err, NoteError::NoSignature { .. }), "{err}");
        // Other malformations.
        let malformed = [
            note.trim_end_matches('\n').to_string(),
            format!("{note}trailing garbage\n"),
            note.replacen('\u{2014}', "-", 1),
            note.replacen("jisr-node-1 ", "jisr node-1 ", 1),
            format!("\u{1}{note}"),
        ];
        for bad in malformed {
            let err = v.verify(&bad).unwrap_err();
            assert!(matches!(err, NoteError::MalformedNote(_)), "{bad:?}: {err}");
        }
    }

    #[test]
    fn verifier_key_has_the_documented_shape_and_round_trips() {
        let s = signer("jisr-node-1");
        let vkey = s.verifier_key();
        let parts: Vec<&str> = vkey.splitn(3, '+').collect();
        assert_eq!(parts.len(), 3, "{vkey}");
        assert_eq!(parts[0], "jisr-node-1");
        assert_eq!(parts[1].len(), 8);
        assert!(parts[1]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        let key = B64.decode(parts[2]).unwrap();
        assert_eq!(key.len(), 33);
        assert_eq!(key[0], 0x01);
        assert_eq!(&key[1..], s.key_pair.public_key().as_ref());

        let v = NoteVerifier::parse(&vkey).unwrap();
        assert_eq!(v.name(), s.name());
        assert_eq!(v.key_id, s.key_id);
        assert_eq!(format_verifier_key(&v.name, v.key_id, &v.public_key), vkey);
    }

    #[test]
    fn key_id_is_the_prefix_of_the_hash_of_name_newline_alg_key() {
        let s = signer("jisr-node-1");
        let pk = s.key_pair.public_key().as_ref().to_vec();
        let mut concatenation = Vec::new();
        concatenation.extend_from_slice(b"jisr-node-1");
        concatenation.push(b'\n');
        concatenation.push(0x01);
        concatenation.extend_from_slice(&pk);
        assert_eq!(concatenation.len(), 11 + 1 + 1 + 32);
        let digest = Sha256::digest(&concatenation);
        let want = hex::encode(&digest[..4]);
        assert_eq!(format!("{:08x}", s.key_id), want);
        assert_eq!(s.verifier_key().split('+').nth(1).unwrap(), want);
    }

    #[test]
    fn from_pkcs8_rejects_bad_names_and_keys() {
        let der = NoteSigner::generate_pkcs8().unwrap();
        for name in ["", "a b", "a+b", "a\nb", "tab\there"] {
            assert!(matches!(
                NoteSigner::from_pkcs8(name, &der),
                Err(NoteError::BadName { .. })
            ));
        }
        assert!(matches!(
            NoteSigner::from_pkcs8("ok", &der[..der.len() - 1]),
            Err(NoteError::Key(_))
        ));
        assert!(matches!(
            NoteSigner::from_pkcs8("ok", b"not a key"),
            Err(NoteError::Key(_))
        ));
        // The same key always yields the same verifier key.
        assert_eq!(
            NoteSigner::from_pkcs8("ok", &der).unwrap().verifier_key(),
            NoteSigner::from_pkcs8("ok", &der).unwrap().verifier_key()
        );
    }

    // ---- published vectors from golang.org/x/mod/sumdb/note (note_test.go) -------------------

    const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const PETER_SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
    const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                           then you don't know what your problem is.\n";
    const PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

    fn peter_signer() -> NoteSigner {
        let key = B64
            .decode(PETER_SKEY.splitn(5, '+').nth(4).unwrap())
            .unwrap();
        assert_eq!(key[0], 0x01);
        let kp = Ed25519KeyPair::from_seed_unchecked(&key[1..]).unwrap();
        NoteSigner::from_key_pair("PeterNeumann", kp)
    }

    #[test]
    fn go_note_vector_verifies() {
        let v = NoteVerifier::parse(PETER_VKEY).unwrap();
        assert_eq!(v.name(), "PeterNeumann");
        assert_eq!(v.key_id, 0xc74f20a3);
        let note = format!("{GO_TEXT}\n{PETER_SIG}");
        assert_eq!(v.open(&note).unwrap(), GO_TEXT);
        // It is a signed note but not a checkpoint.
        assert!(matches!(
            v.verify(&note).unwrap_err(),
            NoteError::MalformedCheckpoint(_)
        ));

        // Two signatures: each key finds its own and ignores the other.
        let e = NoteVerifier::parse(ENOCH_VKEY).unwrap();
        let both = format!("{GO_TEXT}\n{PETER_SIG}{ENOCH_SIG}");
        assert_eq!(v.open(&both).unwrap(), GO_TEXT);
        assert_eq!(e.open(&both).unwrap(), GO_TEXT);
        assert!(matches!(
            e.open(&note).unwrap_err(),
            NoteError::NoSignature { .. }
        ));

        // Go's "invalid signature" case: four characters inserted into the signature.
        let mangled = format!("{GO_TEXT}\n{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
        assert!(matches!(
            v.open(&mangled).unwrap_err(),
            NoteError::BadSignature { .. }
        ));

        // Go's malformed messages.
        let bad = [
            GO_TEXT.to_string(),
            format!("{GO_TEXT}\n"),
            format!("{GO_TEXT}\n{}", &PETER_SIG[..PETER_SIG.len() - 1]),
            format!("\u{1}{GO_TEXT}\n{PETER_SIG}"),
            format!("{GO_TEXT}\n\u{2014} Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="),
            format!("{GO_TEXT}\n{PETER_SIG}Unexpected line.\n"),
            format!("{GO_TEXT}\n{}", PETER_SIG.repeat(101)),
        ];
        for msg in bad {
            assert!(
                matches!(v.open(&msg).unwrap_err(), NoteError::MalformedNote(_)),
                "{msg:?}"
            );
        }
        assert!(v
            .open(&format!("{GO_TEXT}\n{}", PETER_SIG.repeat(100)))
            .is_ok());
    }

    #[test]
    fn go_signer_vector_is_reproduced_byte_for_byte() {
        // Ed25519 is deterministic, so signing Go's text with Go's key must give Go's note.
        let s = peter_signer();
        assert_eq!(s.verifier_key(), PETER_VKEY);
        assert_eq!(s.sign_text(GO_TEXT), format!("{GO_TEXT}\n{PETER_SIG}"));
    }

    #[test]
    fn go_verifier_key_manglings_are_rejected() {
        // As in Go's TestNewVerifier: every proper substring and every single-byte increment.
        let b = PETER_VKEY.as_bytes();
        for i in 0..=b.len() {
            for j in i + 1..=b.len() {
                if i != 0 || j != b.len() {
                    let k = std::str::from_utf8(&b[i..j]).unwrap();
                    assert!(NoteVerifier::parse(k).is_err(), "{k:?} accepted");
                }
            }
        }
        for i in 0..b.len() {
            let mut m = b.to_vec();
            m[i] += 1;
            let k = String::from_utf8(m).unwrap();
            assert!(NoteVerifier::parse(&k).is_err(), "{k:?} accepted");
        }
        for k in [
            // wrong length key, with adjusted key hash
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
            // unknown algorithm, with adjusted key hash
            "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3",
            "",
        ] {
            assert!(
                matches!(NoteVerifier::parse(k), Err(NoteError::BadVerifierKey(_))),
                "{k:?} accepted"
            );
        }
    }
}

//! The per-conversation vault: originals of redacted values, encrypted at rest.
//!
//! Redaction replaces each detected value with a typed placeholder (`[CARD_1]`) that is stable
//! within the conversation. The original goes to a [`VaultStore`] sealed with
//! ChaCha20-Poly1305 under a key from configuration; the associated data binds each ciphertext
//! to its conversation and placeholder, so a record copied elsewhere does not decrypt. Lookup
//! of "have we seen this value?" uses an HMAC-SHA-256 fingerprint under a key derived from the
//! same secret, so the store never holds anything it could match against a guess without the key.
//!
//! Secrets the rules say never to store (recovery phrases, private keys, OTP, CVV, passwords,
//! API secrets) get a placeholder and a fingerprint but no ciphertext: nothing can reveal them.
//! Only a tool that an [`AccessPolicy`] names for the value's type gets the original back.
//! Deleting a conversation deletes its records.
//!
//! The store trait is small on purpose (load a conversation's records, append, fetch one, delete
//! a conversation) so SQLite / PostgreSQL backends are a table each; [`InMemoryVaultStore`] is
//! the reference implementation.

use async_trait::async_trait;
use chacha20poly1305::aead::Aead;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::entity::{Detection, EntityType};
use crate::redact::{self, PlaceholderBook};
use crate::secret::Secret;

/// Errors of the vault and its stores.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The key material in configuration is not 32 bytes of hex or base64.
    #[error("vault key must be 32 bytes, hex or base64 encoded")]
    BadKey,
    /// No such placeholder in this conversation.
    #[error("no vault entry {placeholder} in this conversation")]
    NotFound {
        /// The placeholder asked for.
        placeholder: String,
    },
    /// The caller may not receive values of this type.
    #[error("tool {tool} may not receive {kind} values")]
    NotAuthorised {
        /// The tool that asked.
        tool: String,
        /// The type of the value.
        kind: EntityType,
    },
    /// The value is of a type that is never stored (a secret): it cannot be revealed.
    #[error("{kind} values are never stored")]
    Withheld {
        /// The type of the value.
        kind: EntityType,
    },
    /// Decryption failed: wrong key, or the record was tampered with or moved.
    #[error("vault record failed authentication")]
    Corrupt,
    /// The backend failed.
    #[error("vault store: {0}")]
    Store(String),
}

impl VaultError {
    /// Whether retrying the same call could succeed (backend trouble only).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Store(_))
    }
}

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultRecord {
    /// The placeholder, e.g. `[CARD_1]`.
    pub placeholder: String,
    /// The value's type.
    pub kind: EntityType,
    /// HMAC-SHA-256 of the canonical value under the fingerprint key.
    pub fingerprint: Vec<u8>,
    /// 12-byte nonce and ciphertext with tag; `None` for withheld secrets.
    pub sealed: Option<Sealed>,
}

/// An encrypted value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// ChaCha20-Poly1305 nonce (random per record).
    pub nonce: [u8; 12],
    /// Ciphertext followed by the 16-byte tag.
    pub ciphertext: Vec<u8>,
}

/// Where vault records live. Implementations need no crypto: they store opaque records.
#[async_trait]
pub trait VaultStore: Send + Sync {
    /// All records of a conversation (empty if none).
    async fn records(&self, conversation: &str) -> Result<Vec<VaultRecord>, VaultError>;
    /// Append records to a conversation.
    async fn insert(&self, conversation: &str, records: Vec<VaultRecord>) -> Result<(), VaultError>;
    /// One record by placeholder.
    async fn get(&self, conversation: &str, placeholder: &str) -> Result<Option<VaultRecord>, VaultError>;
    /// Delete every record of a conversation; returns how many were deleted.
    async fn delete_conversation(&self, conversation: &str) -> Result<usize, VaultError>;
}

/// Records in process memory (tests, embedded single-process use).
#[derive(Debug, Default)]
pub struct InMemoryVaultStore {
    inner: Mutex<HashMap<String, Vec<VaultRecord>>>,
}

impl InMemoryVaultStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, Vec<VaultRecord>>>, VaultError> {
        self.inner.lock().map_err(|_| VaultError::Store("in-memory vault lock poisoned".into()))
    }
}

#[async_trait]
impl VaultStore for InMemoryVaultStore {
    async fn records(&self, conversation: &str) -> Result<Vec<VaultRecord>, VaultError> {
        Ok(self.lock()?.get(conversation).cloned().unwrap_or_default())
    }
    async fn insert(&self, conversation: &str, records: Vec<VaultRecord>) -> Result<(), VaultError> {
        self.lock()?.entry(conversation.to_owned()).or_default().extend(records);
        Ok(())
    }
    async fn get(&self, conversation: &str, placeholder: &str) -> Result<Option<VaultRecord>, VaultError> {
        Ok(self.lock()?.get(conversation).and_then(|v| v.iter().find(|r| r.placeholder == placeholder).cloned()))
    }
    async fn delete_conversation(&self, conversation: &str) -> Result<usize, VaultError> {
        Ok(self.lock()?.remove(conversation).map_or(0, |v| v.len()))
    }
}

/// The vault master key (32 bytes).
#[derive(Clone, Debug)]
pub struct VaultKey(Secret<[u8; 32]>);

impl VaultKey {
    /// From raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Secret::new(bytes))
    }

    /// From configuration text: 64 hex digits or standard base64 of 32 bytes.
    ///
    /// # Errors
    /// [`VaultError::BadKey`] if it is neither.
    pub fn parse(text: &Secret<String>) -> Result<Self, VaultError> {
        use base64::Engine as _;
        let t = text.expose().trim();
        let bytes: Vec<u8> = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&t[2 * i..2 * i + 2], 16))
                .collect::<Result<_, _>>()
                .map_err(|_| VaultError::BadKey)?
        } else {
            base64::engine::general_purpose::STANDARD.decode(t).map_err(|_| VaultError::BadKey)?
        };
        let arr: [u8; 32] = bytes.try_into().map_err(|_| VaultError::BadKey)?;
        Ok(Self::from_bytes(arr))
    }

    /// A fresh random key (tests, ephemeral vaults).
    ///
    /// # Errors
    /// [`VaultError::Store`] if the OS random source fails.
    pub fn random() -> Result<Self, VaultError> {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).map_err(|e| VaultError::Store(format!("random key: {e}")))?;
        Ok(Self::from_bytes(k))
    }

    fn derive(&self, label: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"switchboard-guard/vault/");
        h.update(label);
        h.update(self.0.expose());
        h.finalize().into()
    }
}

/// Which tools may receive which types of value back from the vault.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AccessPolicy {
    /// Tool name → types it may receive.
    pub tools: HashMap<String, HashSet<EntityType>>,
}

impl AccessPolicy {
    /// Allow `tool` to receive values of `kinds`.
    pub fn allow(mut self, tool: impl Into<String>, kinds: impl IntoIterator<Item = EntityType>) -> Self {
        self.tools.entry(tool.into()).or_default().extend(kinds);
        self
    }

    fn permits(&self, tool: &str, kind: EntityType) -> bool {
        self.tools.get(tool).is_some_and(|k| k.contains(&kind))
    }
}

/// One replacement made by [`Vault::redact`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replacement {
    /// The placeholder written into the text.
    pub placeholder: String,
    /// The value's type.
    pub kind: EntityType,
    /// Char span of the original value in the input.
    pub start: usize,
    /// Char span end.
    pub end: usize,
}

/// Redacted text and what was replaced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Redacted {
    /// The text with placeholders.
    pub text: String,
    /// One entry per replaced span, in order.
    pub replacements: Vec<Replacement>,
}

/// The vault: a store, a cipher, a fingerprint key and an access policy.
pub struct Vault {
    store: Arc<dyn VaultStore>,
    cipher: ChaCha20Poly1305,
    fingerprint_key: Secret<[u8; 32]>,
    access: AccessPolicy,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("access", &self.access).finish_non_exhaustive()
    }
}

impl Vault {
    /// A vault over `store` with `key` and `access`.
    pub fn new(store: Arc<dyn VaultStore>, key: &VaultKey, access: AccessPolicy) -> Self {
        let enc = Secret::new(key.derive(b"encrypt"));
        let cipher = ChaCha20Poly1305::new(&(*enc.expose()).into());
        Self { store, cipher, fingerprint_key: Secret::new(key.derive(b"fingerprint")), access }
    }

    fn fingerprint(&self, conversation: &str, kind: EntityType, canonical: &str) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(self.fingerprint_key.expose())
            .expect("HMAC takes any key length");
        mac.update(conversation.as_bytes());
        mac.update(&[0]);
        mac.update(kind.name().as_bytes());
        mac.update(&[0]);
        mac.update(canonical.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    fn aad(conversation: &str, placeholder: &str) -> Vec<u8> {
        let mut a = Vec::with_capacity(conversation.len() + placeholder.len() + 1);
        a.extend_from_slice(conversation.as_bytes());
        a.push(0);
        a.extend_from_slice(placeholder.as_bytes());
        a
    }

    fn seal(&self, conversation: &str, placeholder: &str, value: &str) -> Result<Sealed, VaultError> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| VaultError::Store(format!("random nonce: {e}")))?;
        let aad = Self::aad(conversation, placeholder);
        let ciphertext = self
            .cipher
            .encrypt(&nonce.into(), chacha20poly1305::aead::Payload { msg: value.as_bytes(), aad: &aad })
            .map_err(|_| VaultError::Corrupt)?;
        Ok(Sealed { nonce, ciphertext })
    }

    /// Replace `detections` in `text` with placeholders stable within `conversation`, storing
    /// new originals (except withheld secrets) in the vault.
    ///
    /// # Errors
    /// Store errors.
    pub async fn redact(
        &self,
        conversation: &str,
        text: &str,
        detections: &[Detection],
    ) -> Result<Redacted, VaultError> {
        let mut book = PlaceholderBook::new();
        for r in self.store.records(conversation).await? {
            book.record(r.fingerprint, &r.placeholder);
        }
        let mut new_records = Vec::new();
        let mut replacements = Vec::with_capacity(detections.len());
        let mut failure = None;
        let out = redact::apply(text, detections, |d| {
            let value = d.value(text);
            let fp = self.fingerprint(conversation, d.kind, &redact::canonical(d.kind, value));
            let (placeholder, fresh) = book.placeholder_for(d.kind, &fp);
            if fresh {
                let sealed = if d.kind.is_secret() {
                    None
                } else {
                    match self.seal(conversation, &placeholder, value) {
                        Ok(s) => Some(s),
                        Err(e) => {
                            failure.get_or_insert(e);
                            None
                        }
                    }
                };
                new_records.push(VaultRecord {
                    placeholder: placeholder.clone(),
                    kind: d.kind,
                    fingerprint: fp,
                    sealed,
                });
            }
            replacements.push(Replacement {
                placeholder: placeholder.clone(),
                kind: d.kind,
                start: d.start,
                end: d.end,
            });
            placeholder
        });
        if let Some(e) = failure {
            return Err(e);
        }
        if !new_records.is_empty() {
            self.store.insert(conversation, new_records).await?;
        }
        Ok(Redacted { text: out, replacements })
    }

    /// The original value behind `placeholder`, for `tool` only.
    ///
    /// # Errors
    /// [`VaultError::NotFound`], [`VaultError::NotAuthorised`], [`VaultError::Withheld`],
    /// [`VaultError::Corrupt`] or a store error.
    pub async fn reveal(
        &self,
        conversation: &str,
        placeholder: &str,
        tool: &str,
    ) -> Result<Secret<String>, VaultError> {
        let rec = self
            .store
            .get(conversation, placeholder)
            .await?
            .ok_or_else(|| VaultError::NotFound { placeholder: placeholder.to_owned() })?;
        if !self.access.permits(tool, rec.kind) {
            tracing::warn!(tool, kind = %rec.kind, "vault reveal refused");
            return Err(VaultError::NotAuthorised { tool: tool.to_owned(), kind: rec.kind });
        }
        let sealed = rec.sealed.ok_or(VaultError::Withheld { kind: rec.kind })?;
        let aad = Self::aad(conversation, placeholder);
        let plain = self
            .cipher
            .decrypt(&sealed.nonce.into(), chacha20poly1305::aead::Payload { msg: &sealed.ciphertext, aad: &aad })
            .map_err(|_| VaultError::Corrupt)?;
        String::from_utf8(plain).map(Secret::new).map_err(|_| VaultError::Corrupt)
    }

    /// Replace every placeholder inside the string values of a tool's JSON arguments with the
    /// original, if `tool` may receive it. The result holds real values: hand it to the tool and
    /// drop it; never log it.
    ///
    /// # Errors
    /// As [`Vault::reveal`], for the first placeholder that fails.
    pub async fn resolve_arguments(
        &self,
        conversation: &str,
        tool: &str,
        args: &serde_json::Value,
    ) -> Result<Secret<String>, VaultError> {
        let mut found = Vec::new();
        collect_placeholders(args, &mut found);
        let mut values = HashMap::new();
        for p in found {
            if let std::collections::hash_map::Entry::Vacant(e) = values.entry(p) {
                let v = self.reveal(conversation, e.key(), tool).await?;
                e.insert(v);
            }
        }
        let resolved = substitute(args, &values);
        Ok(Secret::new(resolved.to_string()))
    }

    /// Delete a conversation's vault entries.
    ///
    /// # Errors
    /// Store errors.
    pub async fn delete_conversation(&self, conversation: &str) -> Result<usize, VaultError> {
        self.store.delete_conversation(conversation).await
    }
}

static PLACEHOLDER_RE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"\[[A-Z_]{2,20}_[0-9]{1,6}\]").expect("placeholder pattern compiles")
});

fn collect_placeholders(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.extend(PLACEHOLDER_RE.find_iter(s).map(|m| m.as_str().to_owned())),
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_placeholders(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| collect_placeholders(x, out)),
        _ => {}
    }
}

fn substitute(v: &serde_json::Value, values: &HashMap<String, Secret<String>>) -> serde_json::Value {
    match v {
        serde_json::Value::String(s) => serde_json::Value::String(
            PLACEHOLDER_RE
                .replace_all(s, |c: &regex::Captures<'_>| {
                    values.get(&c[0]).map_or_else(|| c[0].to_owned(), |x| x.expose().clone())
                })
                .into_owned(),
        ),
        serde_json::Value::Array(a) => a.iter().map(|x| substitute(x, values)).collect(),
        serde_json::Value::Object(o) => {
            o.iter().map(|(k, x)| (k.clone(), substitute(x, values))).collect::<serde_json::Map<_, _>>().into()
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect;

    fn vault(store: Arc<InMemoryVaultStore>) -> Vault {
        let key = VaultKey::parse(&Secret::new("11".repeat(32))).unwrap();
        let access = AccessPolicy::default().allow("card_service", [EntityType::CreditCard, EntityType::Cvv]);
        Vault::new(store, &key, access)
    }

    #[tokio::test]
    async fn placeholders_stable_across_turns_and_reveal_is_authorised() {
        let store = Arc::new(InMemoryVaultStore::new());
        let v = vault(store.clone());
        let t1 = "card 4111 1111 1111 1111, CPF 723.910.967-47";
        let r1 = v.redact("c1", t1, &detect(t1)).await.unwrap();
        assert_eq!(r1.text, "card [CARD_1], CPF [CPF_1]");
        let t2 = "again 4111-1111-1111-1111 and 5555555555554444";
        let r2 = v.redact("c1", t2, &detect(t2)).await.unwrap();
        assert_eq!(r2.text, "again [CARD_1] and [CARD_2]");
        // another conversation numbers from 1 and shares nothing
        let r3 = v.redact("c2", t2, &detect(t2)).await.unwrap();
        assert_eq!(r3.text, "again [CARD_1] and [CARD_2]");

        let card = v.reveal("c1", "[CARD_2]", "card_service").await.unwrap();
        assert_eq!(card.expose(), "5555555555554444");
        assert!(matches!(v.reveal("c1", "[CPF_1]", "card_service").await, Err(VaultError::NotAuthorised { .. })));
        assert!(matches!(v.reveal("c1", "[CARD_1]", "weather").await, Err(VaultError::NotAuthorised { .. })));
        let args = serde_json::json!({"card": "[CARD_1]", "note": "x"});
        let resolved = v.resolve_arguments("c1", "card_service", &args).await.unwrap();
        assert!(resolved.expose().contains("4111 1111 1111 1111"));

        // nothing in the store is plaintext
        let dump = format!("{:?}", store.records("c1").await.unwrap());
        assert!(!dump.contains("4111") && !dump.contains("723.910"));

        assert_eq!(v.delete_conversation("c1").await.unwrap(), 3);
        assert!(matches!(v.reveal("c1", "[CARD_1]", "card_service").await, Err(VaultError::NotFound { .. })));
        assert_eq!(store.records("c2").await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn secrets_are_withheld_and_records_are_bound() {
        let store = Arc::new(InMemoryVaultStore::new());
        let v = vault(store.clone());
        let t = "o CVV é 123";
        let r = v.redact("c1", t, &detect(t)).await.unwrap();
        assert_eq!(r.text, "o CVV é [CVV_1]");
        assert!(matches!(v.reveal("c1", "[CVV_1]", "card_service").await, Err(VaultError::Withheld { .. })));
        // a record moved to another conversation fails authentication
        let t = "card 4111 1111 1111 1111";
        v.redact("c1", t, &detect(t)).await.unwrap();
        let rec = store.get("c1", "[CARD_1]").await.unwrap().unwrap();
        store.insert("evil", vec![rec]).await.unwrap();
        assert!(matches!(v.reveal("evil", "[CARD_1]", "card_service").await, Err(VaultError::Corrupt)));
        // a different key cannot read it
        let other = Vault::new(
            store.clone(),
            &VaultKey::random().unwrap(),
            AccessPolicy::default().allow("card_service", [EntityType::CreditCard]),
        );
        assert!(matches!(other.reveal("c1", "[CARD_1]", "card_service").await, Err(VaultError::Corrupt)));
        assert!(VaultKey::parse(&Secret::new("short".into())).is_err());
        assert_eq!(format!("{:?}", VaultKey::random().unwrap()), "VaultKey(***)");
    }
}

//! The DTLS side of the listener: dimpl's configuration (DTLS 1.2 with
//! TLS_PSK_WITH_AES_128_CCM_8 only, RFC 7925's suite for constrained devices, and its
//! HelloVerifyRequest cookie), the few bytes of the DTLS wire read before dimpl sees a
//! datagram, and the key slot that answers dimpl's synchronous PSK callback.
//!
//! dimpl asks for the key inside `handle_packet`, but the hub's keys are looked up in the
//! database. So the listener reads the PSK identity out of a ClientKeyExchange itself (it is
//! sent in the clear, RFC 4279 §2), looks the key up without blocking, puts it into the
//! [`KeySlot`] and only then hands the datagram to dimpl, emptying the slot again right after.
//! Each listener runs its sessions on one task, so the slot never holds two keys at once.

use std::sync::{Arc, Mutex};

use dimpl::crypto::Dtls12CipherSuite;

/// DTLS record header: type, version, epoch, sequence number, length.
const RECORD_HEADER: usize = 13;
/// DTLS handshake header: type, length, message sequence, fragment offset and length.
const HANDSHAKE_HEADER: usize = 12;
const CONTENT_HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const CLIENT_KEY_EXCHANGE: u8 = 16;

/// The key dimpl's PSK callback answers with: the identity it is for and the key.
#[derive(Default)]
pub(crate) struct KeySlot(Mutex<Option<(Vec<u8>, Vec<u8>)>>);

impl KeySlot {
    pub(crate) fn set(&self, identity: &[u8], key: &[u8]) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some((identity.to_vec(), key.to_vec()));
        }
    }

    pub(crate) fn clear(&self) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = None;
        }
    }
}

impl dimpl::PskResolver for KeySlot {
    /// `None` for any identity but the slot's: dimpl then finishes the handshake with a
    /// random key, so that an unknown identity fails exactly like a wrong key.
    fn resolve(&self, identity: &[u8]) -> Option<Vec<u8>> {
        let slot = self.0.lock().ok()?;
        slot.as_ref().filter(|(slot_identity, _)| slot_identity == identity).map(|(_, key)| key.clone())
    }
}

/// The configuration every session of one listener shares.
pub(crate) fn config(slot: Arc<KeySlot>) -> Result<Arc<dimpl::Config>, dimpl::Error> {
    let config = dimpl::Config::builder()
        .with_psk_server(None, slot)
        .dtls12_cipher_suites(&[Dtls12CipherSuite::PSK_AES128_CCM_8])
        .build()?;
    Ok(Arc::new(config))
}

/// The handshake messages in the clear (epoch 0) of a datagram: `(type, fragment offset,
/// fragment)` of each, as far as the datagram is well formed.
fn cleartext_handshakes(datagram: &[u8]) -> impl Iterator<Item = (u8, usize, &[u8])> {
    let mut records = datagram;
    std::iter::from_fn(move || {
        if records.len() < RECORD_HEADER {
            return None;
        }
        let (header, rest) = records.split_at(RECORD_HEADER);
        let length = usize::from(u16::from_be_bytes([header[11], header[12]]));
        let fragment = rest.get(..length)?;
        records = &rest[length..];
        let cleartext = header[0] == CONTENT_HANDSHAKE && header[3] == 0 && header[4] == 0;
        Some(if cleartext { fragment } else { &[][..] })
    })
    .flat_map(|mut messages| {
        std::iter::from_fn(move || {
            if messages.len() < HANDSHAKE_HEADER {
                return None;
            }
            let (header, rest) = messages.split_at(HANDSHAKE_HEADER);
            let offset = u24(&header[6..9]);
            let length = u24(&header[9..12]);
            let body = rest.get(..length)?;
            messages = &rest[length..];
            Some((header[0], offset, body))
        })
    })
}

fn u24(bytes: &[u8]) -> usize {
    bytes.iter().fold(0, |value, &b| (value << 8) | usize::from(b))
}

/// Whether a datagram starts a handshake: only those open a session for a new address.
pub(crate) fn is_client_hello(datagram: &[u8]) -> bool {
    cleartext_handshakes(datagram).next().is_some_and(|(kind, offset, _)| kind == CLIENT_HELLO && offset == 0)
}

/// The PSK identity of a ClientKeyExchange in the datagram (its first fragment; identities
/// are device URNs, far shorter than a fragment).
pub(crate) fn client_key_exchange_identity(datagram: &[u8]) -> Option<&[u8]> {
    let (_, _, body) =
        cleartext_handshakes(datagram).find(|&(kind, offset, _)| kind == CLIENT_KEY_EXCHANGE && offset == 0)?;
    let length = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    body.get(2..2 + length)
}

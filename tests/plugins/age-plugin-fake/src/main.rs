//! `age-plugin-fake`: an age plugin that stands in for a hardware key (a
//! YubiKey, a TPM) in outreach's store tests.
//!
//! A key lives in a *slot* of a *device*. The identity
//! (`AGE-PLUGIN-FAKE-1…`) and the recipient (`age1fake1…`) both only name
//! the slot — like a YubiKey's identity stub, neither is a secret. The
//! secret is the device's: derived from a built-in name, or from
//! `AGE_PLUGIN_FAKE_DEVICE` (another name is another device, whose keys
//! unwrap nothing the first one wrapped). A file key is wrapped with
//! ChaCha20-Poly1305 under a key derived (HKDF-SHA-256) from the device
//! secret, the slot and a random salt kept in the stanza:
//! `-> fake SLOT-HEX SALT-HEX`.
//!
//! Hooks for the tests, from the environment:
//! - `AGE_PLUGIN_FAKE_LOG=FILE`: append `STATE-MACHINE PID` to FILE each
//!   time the plugin runs, so a test can count how often it was started.
//! - `AGE_PLUGIN_FAKE_REFUSE=MESSAGE`: unwrapping fails with MESSAGE (what
//!   a hardware plugin says when a touch timed out or a PIN was wrong).
//! - `AGE_PLUGIN_FAKE_DEVICE=NAME`: which device is "plugged in".
//!
//! Run as `age-plugin-fake --generate SLOT`, it prints an identity file for
//! SLOT with its recipient in a comment, as `age-plugin-yubikey` does.
//! Age implementations run it as `age-plugin-fake --age-plugin=STATE`.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};

use age_core::format::{FILE_KEY_BYTES, FileKey, Stanza};
use age_core::primitives::{aead_decrypt, aead_encrypt, hkdf};
use age_core::secrecy::ExposeSecret;
use age_plugin::identity::{self, IdentityPluginV1};
use age_plugin::recipient::{self, RecipientPluginV1};
use age_plugin::{Callbacks, PluginHandler, print_new_identity, run_state_machine};

const PLUGIN_NAME: &str = "fake";
const STANZA_TAG: &str = "fake";
const DEFAULT_DEVICE: &str = "fake-token-serial-0001";

/// The key of `slot` on the device that is plugged in.
fn slot_key(slot: &[u8], salt: &[u8]) -> [u8; 32] {
    let device = std::env::var("AGE_PLUGIN_FAKE_DEVICE").unwrap_or_else(|_| DEFAULT_DEVICE.into());
    let secret = hkdf(b"", b"age-plugin-fake device", device.as_bytes());
    let mut ikm = secret.to_vec();
    ikm.extend_from_slice(slot);
    hkdf(salt, b"age-plugin-fake wrap", &ikm)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A slot name from an identity's or recipient's data: 1-64 bytes of
/// letters, digits and `-`.
fn valid_slot(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes.len() <= 64
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
}

fn random_salt() -> io::Result<[u8; 16]> {
    let mut salt = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut salt)?;
    Ok(salt)
}

/// Record one start of the plugin, when the test asked for it.
fn log_start(state_machine: &str) {
    if let Ok(path) = std::env::var("AGE_PLUGIN_FAKE_LOG") {
        let line = format!("{state_machine} {}\n", std::process::id());
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            eprintln!("age-plugin-fake: cannot append to {path}: {e}");
        }
    }
}

struct Handler;

impl PluginHandler for Handler {
    type RecipientV1 = Wrapper;
    type IdentityV1 = Unwrapper;

    fn recipient_v1(self) -> io::Result<Wrapper> {
        Ok(Wrapper { slots: Vec::new() })
    }

    fn identity_v1(self) -> io::Result<Unwrapper> {
        Ok(Unwrapper { slots: Vec::new() })
    }
}

/// The recipient side: wraps file keys to the slots it was given.
struct Wrapper {
    slots: Vec<Vec<u8>>,
}

impl RecipientPluginV1 for Wrapper {
    fn add_recipient(
        &mut self,
        index: usize,
        plugin_name: &str,
        bytes: &[u8],
    ) -> Result<(), recipient::Error> {
        if plugin_name != PLUGIN_NAME || !valid_slot(bytes) {
            return Err(recipient::Error::Recipient {
                index,
                message: "not a fake-token recipient".into(),
            });
        }
        self.slots.push(bytes.to_vec());
        Ok(())
    }

    fn add_identity(
        &mut self,
        index: usize,
        plugin_name: &str,
        bytes: &[u8],
    ) -> Result<(), recipient::Error> {
        if plugin_name != PLUGIN_NAME || !valid_slot(bytes) {
            return Err(recipient::Error::Identity {
                index,
                message: "not a fake-token identity".into(),
            });
        }
        self.slots.push(bytes.to_vec());
        Ok(())
    }

    fn labels(&mut self) -> HashSet<String> {
        HashSet::new()
    }

    fn wrap_file_keys(
        &mut self,
        file_keys: Vec<FileKey>,
        _callbacks: impl Callbacks<recipient::Error>,
    ) -> io::Result<Result<Vec<Vec<Stanza>>, Vec<recipient::Error>>> {
        let mut files = Vec::with_capacity(file_keys.len());
        for file_key in &file_keys {
            let mut stanzas = Vec::with_capacity(self.slots.len());
            for slot in &self.slots {
                let salt = random_salt()?;
                let key = slot_key(slot, &salt);
                stanzas.push(Stanza {
                    tag: STANZA_TAG.into(),
                    args: vec![to_hex(slot), to_hex(&salt)],
                    body: aead_encrypt(&key, file_key.expose_secret()),
                });
            }
            files.push(stanzas);
        }
        Ok(Ok(files))
    }
}

/// The identity side: unwraps stanzas of the slots it was given, as the
/// device would.
struct Unwrapper {
    slots: Vec<Vec<u8>>,
}

impl IdentityPluginV1 for Unwrapper {
    fn add_identity(
        &mut self,
        index: usize,
        plugin_name: &str,
        bytes: &[u8],
    ) -> Result<(), identity::Error> {
        if plugin_name != PLUGIN_NAME || !valid_slot(bytes) {
            return Err(identity::Error::Identity {
                index,
                message: "not a fake-token identity".into(),
            });
        }
        self.slots.push(bytes.to_vec());
        Ok(())
    }

    fn unwrap_file_keys(
        &mut self,
        files: Vec<Vec<Stanza>>,
        mut callbacks: impl Callbacks<identity::Error>,
    ) -> io::Result<HashMap<usize, Result<FileKey, Vec<identity::Error>>>> {
        let mut out = HashMap::new();
        for (file_index, stanzas) in files.into_iter().enumerate() {
            for (stanza_index, stanza) in stanzas.iter().enumerate() {
                if stanza.tag != STANZA_TAG {
                    continue;
                }
                let parsed = match &stanza.args[..] {
                    [slot, salt] => from_hex(slot).zip(from_hex(salt)),
                    _ => None,
                };
                let Some((slot, salt)) = parsed else {
                    out.insert(
                        file_index,
                        Err(vec![identity::Error::Stanza {
                            file_index,
                            stanza_index,
                            message: "malformed fake-token stanza".into(),
                        }]),
                    );
                    break;
                };
                let Some(index) = self.slots.iter().position(|s| *s == slot) else {
                    continue;
                };
                // What a hardware key asks for before it answers.
                let _ = callbacks.message(&format!(
                    "touch the fake token (slot {})",
                    String::from_utf8_lossy(&slot)
                ))?;
                if let Ok(message) = std::env::var("AGE_PLUGIN_FAKE_REFUSE") {
                    out.insert(
                        file_index,
                        Err(vec![identity::Error::Identity { index, message }]),
                    );
                    break;
                }
                let key = slot_key(&slot, &salt);
                // Another device's stanza does not open: not ours to report.
                if let Some(plain) = aead_decrypt(&key, FILE_KEY_BYTES, &stanza.body)
                    .ok()
                    .filter(|p| p.len() == FILE_KEY_BYTES)
                {
                    let file_key = FileKey::init_with_mut(|k| k.copy_from_slice(&plain));
                    out.insert(file_index, Ok(file_key));
                    break;
                }
            }
        }
        Ok(out)
    }
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(state_machine) = args.iter().find_map(|a| a.strip_prefix("--age-plugin=")) {
        log_start(state_machine);
        return run_state_machine(state_machine, Handler);
    }
    match &args[..] {
        [flag, slot] if flag == "--generate" && valid_slot(slot.as_bytes()) => {
            print_new_identity(PLUGIN_NAME, slot.as_bytes(), slot.as_bytes());
            Ok(())
        }
        _ => {
            eprintln!(
                "usage: age-plugin-fake --generate SLOT   (SLOT: 1-64 letters, digits or `-`)"
            );
            std::process::exit(2)
        }
    }
}

//! Keys held by age plugins: a YubiKey (`age-plugin-yubikey`), a TPM
//! (`age-plugin-tpm`), a cloud KMS.
//!
//! Owns: reading recipients (X25519 `age1…` and plugins' `age1NAME1…`)
//! into what encrypts to them; the file of plugin identities
//! (`AGE-PLUGIN-NAME-1…`, which for hardware is a stub naming a key on a
//! device, not a secret); unwrapping an identity file with them; and how a
//! plugin talks to the person running outreach (a "touch your key"
//! message, a PIN).
//!
//! A plugin's binary (`age-plugin-NAME` on `PATH`) runs when a file is
//! encrypted to one of its recipients, and when the store's identity file,
//! wrapped to it, is unwrapped — once per outreach process. Records are
//! encrypted to and decrypted with the unwrapped X25519 key in memory, so
//! reading a record never starts a plugin or asks for a touch.
//!
//! Never: prints a secret (a PIN a plugin asks for goes to the plugin
//! only, and plugin identities are never shown).

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use age::secrecy::SecretString;
use zeroize::Zeroizing;

/// Something files are encrypted to.
pub(super) type BoxedRecipient = Box<dyn age::Recipient + Send + Sync>;

/// How an age plugin talks to the person running outreach: on a terminal,
/// its messages are shown and its questions asked there; without one
/// (a daemon under systemd), messages go to the log and questions get no
/// answer, so the plugin fails with its own reason.
#[derive(Clone, Copy, Debug, Default)]
pub struct PluginPrompts;

impl PluginPrompts {
    fn interactive() -> bool {
        std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
    }

    fn ask_line(prompt: &str) -> Option<String> {
        if !Self::interactive() {
            return None;
        }
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).ok()?;
        Some(line.trim_end_matches(['\r', '\n']).to_string())
    }
}

impl age::Callbacks for PluginPrompts {
    fn display_message(&self, message: &str) {
        if std::io::stderr().is_terminal() {
            eprintln!("{message}");
        } else {
            tracing::info!("age plugin: {message}");
        }
    }

    fn confirm(&self, message: &str, yes_string: &str, no_string: Option<&str>) -> Option<bool> {
        if !Self::interactive() {
            tracing::warn!(
                "an age plugin asks to confirm \"{message}\", but there is no terminal to ask on"
            );
            return None;
        }
        let choices = match no_string {
            Some(no) => format!("[{yes_string}/{no}]"),
            None => format!("[{yes_string}]"),
        };
        let answer = Self::ask_line(&format!("{message} {choices}: "))?;
        let answer = answer.trim();
        if answer.eq_ignore_ascii_case(yes_string) || (no_string.is_none() && answer.is_empty()) {
            Some(true)
        } else if no_string.is_some_and(|no| answer.eq_ignore_ascii_case(no)) {
            Some(false)
        } else {
            None
        }
    }

    fn request_public_string(&self, description: &str) -> Option<String> {
        let answer = Self::ask_line(&format!("{description}: "));
        if answer.is_none() {
            tracing::warn!(
                "an age plugin asks for \"{description}\", but there is no terminal to ask on"
            );
        }
        answer
    }

    fn request_passphrase(&self, description: &str) -> Option<SecretString> {
        if !Self::interactive() {
            tracing::warn!(
                "an age plugin asks for a secret (\"{description}\"), but there is no terminal to ask on; start outreach in a terminal, or give the key a policy that does not ask"
            );
            return None;
        }
        rpassword::prompt_password(format!("{description}: "))
            .ok()
            .map(SecretString::from)
    }
}

/// One recipient, read.
enum Parsed {
    X25519(age::x25519::Recipient),
    Plugin(age::plugin::Recipient),
}

fn parse(s: &str) -> Result<Parsed, String> {
    let s = s.trim();
    if let Ok(r) = s.parse::<age::x25519::Recipient>() {
        return Ok(Parsed::X25519(r));
    }
    if let Ok(r) = s.parse::<age::plugin::Recipient>() {
        return Ok(Parsed::Plugin(r));
    }
    Err(format!(
        "`{s}` is not an age recipient (an X25519 key age1…, or an age plugin's recipient such as age1yubikey1…)"
    ))
}

/// Whether `s` is an age recipient (without looking for its plugin).
pub(super) fn check_recipient(s: &str) -> Result<(), String> {
    parse(s).map(|_| ())
}

/// The plugin whose recipient `s` is (`yubikey` for `age1yubikey1…`), if
/// it is a plugin's.
pub(super) fn plugin_of(s: &str) -> Option<String> {
    match parse(s) {
        Ok(Parsed::Plugin(r)) => Some(r.plugin().to_string()),
        _ => None,
    }
}

/// `s` without the Unicode isolation marks the age crate's localised
/// messages put around names.
pub(super) fn plain(s: &str) -> String {
    s.replace(['\u{2068}', '\u{2069}'], "")
}

/// What a plugin said when it refused (the age crate's words, such as
/// `'age-plugin-yubikey' couldn't use an identity: …`).
fn plugin_errors<E: std::fmt::Display>(errors: &[E]) -> String {
    errors
        .iter()
        .map(|e| plain(&e.to_string()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What an encryption that failed says.
pub(super) fn encrypt_error(e: &age::EncryptError) -> String {
    match e {
        age::EncryptError::Plugin(errors) => {
            format!("the age plugin refused ({})", plugin_errors(errors))
        }
        other => plain(&other.to_string()),
    }
}

/// What a missing plugin binary means for the user.
pub(super) fn missing_plugin(name: &str) -> String {
    format!(
        "`age-plugin-{name}` is not on PATH: install the age plugin `age-plugin-{name}` (from your key's vendor or your distribution) where outreach runs, or add its folder to PATH"
    )
}

/// What encrypts to every recipient in `list`: one per X25519 key, and one
/// per plugin (its binary found on PATH now) for all of that plugin's
/// recipients, so that encrypting a file runs each plugin once.
pub(super) fn recipients_for(list: &[String]) -> Result<Vec<BoxedRecipient>, String> {
    let mut out: Vec<BoxedRecipient> = Vec::new();
    let mut plugins: BTreeMap<String, Vec<age::plugin::Recipient>> = BTreeMap::new();
    for s in list {
        match parse(s)? {
            Parsed::X25519(r) => out.push(Box::new(r)),
            Parsed::Plugin(r) => plugins.entry(r.plugin().to_string()).or_default().push(r),
        }
    }
    for (name, recipients) in plugins {
        let plugin = age::plugin::RecipientPluginV1::new(&name, &recipients, &[], PluginPrompts)
            .map_err(|e| match e {
                age::plugin::ResolveError::MissingPlugin { .. } => format!(
                    "cannot encrypt to the recipient {}: {}",
                    recipients[0],
                    missing_plugin(&name)
                ),
                other => format!(
                    "cannot encrypt to the recipient {}: {}",
                    recipients[0],
                    plain(&other.to_string())
                ),
            })?;
        out.push(Box::new(plugin));
    }
    Ok(out)
}

/// The file of plugin identities that unwraps the store's identity file:
/// `AGE-PLUGIN-NAME-1…` lines (as `age-plugin-yubikey --identity` prints
/// them), with `# recipient: age1NAME1…` comments naming the recipients
/// they open.
pub(super) struct PluginKeys {
    pub path: PathBuf,
    identities: Vec<age::plugin::Identity>,
    /// The recipients its comments name.
    pub recipients: Vec<String>,
}

impl PluginKeys {
    /// Read the plugin identities at `path`. `Ok(None)`: there is no file.
    pub fn read(path: &Path) -> Result<Option<Self>, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => Zeroizing::new(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(format!(
                    "cannot read the plugin identities {}: {e}",
                    path.display()
                ));
            }
        };
        let mut identities = Vec::new();
        let mut recipients = Vec::new();
        for (n, line) in text.lines().map(str::trim).enumerate() {
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                // `# recipient: age1…` (print_new_identity) or
                // `#     Recipient: age1yubikey1…` (age-plugin-yubikey).
                if let Some((label, value)) = comment.split_once(':')
                    && label.trim().eq_ignore_ascii_case("recipient")
                    && check_recipient(value.trim()).is_ok()
                {
                    recipients.push(value.trim().to_string());
                }
                continue;
            }
            // Never echo the line: a software plugin's identity is a secret.
            let id = line.parse::<age::plugin::Identity>().map_err(|_| {
                format!(
                    "the plugin identities {} hold something on line {} that is not an age plugin identity (AGE-PLUGIN-NAME-1…)",
                    path.display(),
                    n + 1
                )
            })?;
            identities.push(id);
        }
        if identities.is_empty() {
            return Err(format!(
                "the plugin identities {} hold no AGE-PLUGIN-… line",
                path.display()
            ));
        }
        Ok(Some(PluginKeys {
            path: path.to_path_buf(),
            identities,
            recipients,
        }))
    }

    /// The plugins these identities belong to.
    pub fn plugins(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .identities
            .iter()
            .map(|i| i.plugin().to_string())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// What decrypts with these identities: one per plugin, its binary
    /// found on PATH now.
    fn readers(&self) -> Result<Vec<Box<dyn age::Identity>>, String> {
        self.plugins()
            .into_iter()
            .map(|name| {
                age::plugin::IdentityPluginV1::new(&name, &self.identities, PluginPrompts)
                    .map(|p| Box::new(p) as Box<dyn age::Identity>)
                    .map_err(|e| match e {
                        age::plugin::ResolveError::MissingPlugin { .. } => format!(
                            "is wrapped to a key the age plugin `{name}` holds, and {}",
                            missing_plugin(&name)
                        ),
                        other => plain(&other.to_string()),
                    })
            })
            .collect()
    }

    /// Decrypt `raw` (an age file wrapped to these identities' keys): one
    /// run of each plugin. The error is a sentence about the file.
    pub fn unwrap(&self, raw: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
        let readers = self.readers()?;
        let refs: Vec<&dyn age::Identity> = readers.iter().map(|r| r.as_ref()).collect();
        super::decrypt_bytes(raw, &refs)
            .map(Zeroizing::new)
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => format!(
                    "cannot be unwrapped with the plugin identities in {} (is it wrapped to another key, or is another device plugged in?)",
                    self.path.display()
                ),
                age::DecryptError::Plugin(errors) => format!(
                    "was not unwrapped: the age plugin refused ({})",
                    plugin_errors(&errors)
                ),
                other => format!(
                    "cannot be unwrapped with the plugin identities in {} ({})",
                    self.path.display(),
                    plain(&other.to_string())
                ),
            })
    }
}

//! The encrypted credential store: atomic 0600 age files readable by the
//! standard `age` tool, clear errors that change nothing.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use outreach::secret::Secret;
use outreach::store::{
    AccountId, AgeDirStore, CredentialStore, Identity, Profile, Record, StoreError,
};

const TOKEN: &str = "store-PLANTED-access-token-5d1e";
const REFRESH: &str = "store-PLANTED-refresh-token-a77c";

fn record(platform: &str, account: &str) -> Record {
    Record {
        version: Record::VERSION,
        id: AccountId::new(platform, account).unwrap(),
        access_token: Secret::new(TOKEN),
        refresh_token: Some(Secret::new(REFRESH)),
        expires_in: Some(7200),
        expires_at: Some(chrono::Utc::now() + chrono::Duration::hours(2)),
        scope: "tweet.read tweet.write".into(),
        profile: Profile {
            id: "42".into(),
            name: "Alice".into(),
            handle: Some("alice".into()),
            picture: None,
            url: None,
        },
        created_at: chrono::Utc::now(),
        last_refreshed: None,
        settings: BTreeMap::from([("instance".to_string(), "https://example.social".to_string())]),
        health: Default::default(),
    }
}

fn open(dir: &Path, identity: &str) -> AgeDirStore {
    let ident = Identity::load_or_create(&dir.join(identity), || None).unwrap();
    AgeDirStore::open(&dir.join("store"), ident).unwrap()
}

#[test]
fn round_trip_several_accounts_per_platform() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "id.txt");
    store.save(&record("x", "alice")).unwrap();
    store.save(&record("x", "bob")).unwrap();
    store.save(&record("mastodon", "default")).unwrap();
    assert_eq!(
        store
            .list()
            .unwrap()
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>(),
        ["mastodon/default", "x/alice", "x/bob"]
    );
    let back = store.load(&AccountId::new("x", "bob").unwrap()).unwrap();
    assert_eq!(back.access_token.expose(), TOKEN);
    assert_eq!(back.refresh_token.as_ref().unwrap().expose(), REFRESH);
    assert_eq!(back.profile.handle.as_deref(), Some("alice"));
    // Debug output of a record never shows its secrets.
    let dbg = format!("{back:?}");
    assert!(!dbg.contains(TOKEN) && !dbg.contains(REFRESH), "{dbg}");
    // No temp files are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("store/x"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
    store.remove(&AccountId::new("x", "bob").unwrap()).unwrap();
    assert!(matches!(
        store.load(&AccountId::new("x", "bob").unwrap()),
        Err(StoreError::NotFound { .. })
    ));
}

#[test]
fn names_cannot_escape_the_store() {
    for bad in ["../etc", "x/../../y", "X", "a b", ""] {
        assert!(AccountId::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn wrong_identity_is_a_clear_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path(), "id.txt")
        .save(&record("x", "alice"))
        .unwrap();
    let path = dir.path().join("store/x/alice.age");
    let before = std::fs::read(&path).unwrap();
    let other = open(dir.path(), "other.txt");
    let err = other
        .load(&AccountId::new("x", "alice").unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the record for x/alice cannot be decrypted with the identity at"),
        "{err}"
    );
    assert!(
        err.contains("other.txt") && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn corrupt_or_truncated_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "id.txt");
    store.save(&record("x", "alice")).unwrap();
    let path = dir.path().join("store/x/alice.age");
    let full = std::fs::read(&path).unwrap();
    for broken in [
        full[..full.len() / 2].to_vec(),
        b"garbage".to_vec(),
        Vec::new(),
    ] {
        std::fs::write(&path, &broken).unwrap();
        let err = store
            .load(&AccountId::new("x", "alice").unwrap())
            .unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("x/alice") && msg.contains("corrupt or truncated"),
            "{msg}"
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            broken,
            "a failed read must not write"
        );
    }
}

#[test]
fn a_second_writer_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "id.txt");
    store.save(&record("x", "alice")).unwrap();
    let path = dir.path().join("store/x/alice.age");
    let before = std::fs::read(&path).unwrap();
    // Another process holds the record's lock.
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("store/x/.alice.lock"))
        .unwrap();
    let child = std::process::Command::new("flock")
        .arg(dir.path().join("store/x/.alice.lock"))
        .args(["sleep", "3"])
        .spawn();
    drop(lock);
    let mut child = child.expect("flock (util-linux) is needed for this test");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut changed = record("x", "alice");
    changed.scope = "changed".into();
    let err = store.save(&changed).unwrap_err().to_string();
    assert!(
        err.contains("another outreach process is writing the record for x/alice"),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
    child.wait().unwrap();
    store.save(&changed).unwrap();
}

#[test]
fn identity_file_is_created_0600_and_standard() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "keys/id.txt");
    let meta = std::fs::metadata(dir.path().join("keys/id.txt")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(dir.path().join("keys/id.txt")).unwrap();
    assert!(text.lines().any(|l| l.starts_with("AGE-SECRET-KEY-1")));
    assert!(store.identity().public_keys()[0].starts_with("age1"));
}

#[test]
fn passphrase_protected_identity_works() {
    use age::secrecy::SecretString;
    let dir = tempfile::tempdir().unwrap();
    // Make a plain identity, then seal it with a passphrase as `age -p` would.
    open(dir.path(), "plain.txt");
    let plain = std::fs::read(dir.path().join("plain.txt")).unwrap();
    let enc = age::Encryptor::with_user_passphrase(SecretString::from("correct horse".to_string()));
    let mut sealed = Vec::new();
    let armor = age::armor::ArmoredWriter::wrap_output(&mut sealed, age::armor::Format::AsciiArmor)
        .unwrap();
    let mut w = enc.wrap_output(armor).unwrap();
    w.write_all(&plain).unwrap();
    w.finish().unwrap().finish().unwrap();
    let path = dir.path().join("sealed.txt");
    std::fs::write(&path, &sealed).unwrap();

    let ok = Identity::load_or_create(&path, || Some("correct horse".into())).unwrap();
    let store = AgeDirStore::open(&dir.path().join("store"), ok).unwrap();
    store.save(&record("x", "alice")).unwrap();
    // The plain identity decrypts what the sealed one wrote: same key.
    let same = open(dir.path(), "plain.txt");
    assert_eq!(
        same.load(&AccountId::new("x", "alice").unwrap())
            .unwrap()
            .access_token
            .expose(),
        TOKEN
    );

    let err = Identity::load_or_create(&path, || Some("wrong".into()))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("cannot be unlocked with that passphrase"),
        "{err}"
    );
    let err = Identity::load_or_create(&path, || None)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("OUTREACH_IDENTITY_PASSPHRASE"), "{err}");
}

/// The standard `age` CLI decrypts a record with the user's identity. CI
/// installs it; set OUTREACH_REQUIRE_AGE_CLI=1 to fail rather than skip
/// when it is missing.
#[test]
fn records_decrypt_with_the_age_cli() {
    let have = std::process::Command::new("age")
        .arg("--version")
        .output()
        .is_ok();
    if !have {
        assert!(
            std::env::var_os("OUTREACH_REQUIRE_AGE_CLI").is_none(),
            "the age CLI is required but missing"
        );
        eprintln!("skipping: the `age` CLI is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    open(dir.path(), "id.txt")
        .save(&record("x", "alice"))
        .unwrap();
    let out = std::process::Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(dir.path().join("id.txt"))
        .arg(dir.path().join("store/x/alice.age"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["access_token"], TOKEN);
    assert_eq!(v["id"]["platform"], "x");
}

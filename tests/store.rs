//! The encrypted credential store: atomic 0600 age files readable by the
//! standard `age` tool, clear errors that change nothing.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use outreach::secret::Secret;
use outreach::store::{
    AccountId, AgeDirStore, CredentialStore, Identity, Profile, Record, StoreError, seal_to,
    write_atomic,
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
        refresh_expires_at: None,
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
        hosts: None,
        saved_login: None,
        scopes_asked: None,
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

// ---------------------------------------------------------------------
// Through the real binary: a missing identity, files open to other
// users, and `store rekey` killed at any point.

/// A home for the binary without plugins: the store commands need none.
fn bare_home() -> support::Home {
    let home = support::Home::new();
    std::fs::remove_dir_all(home.plugins_dir()).unwrap();
    std::fs::create_dir_all(home.plugins_dir()).unwrap();
    home
}

/// `n` records `x/a000…` (plus two escrowed answers and one auxiliary
/// secret, all sealed like records) in `home`'s store, under its identity
/// (created when missing). Returns every encrypted file.
fn seed(home: &Path, n: usize) -> Vec<PathBuf> {
    let store = open(home, "identity.txt");
    for i in 0..n {
        store.save(&record("x", &format!("a{i:03}"))).unwrap();
    }
    let keys = store.identity().public_keys().to_vec();
    for i in 0..2 {
        let sealed = seal_to(&keys, br#"{"escrowed":"store-PLANTED-answer"}"#).unwrap();
        write_atomic(&home.join(format!("store/x/.a{i:03}.answer")), &sealed).unwrap();
    }
    store
        .save_aux("app-registration", b"store-PLANTED-client-secret")
        .unwrap();
    let files = sealed_files(home);
    assert_eq!(files.len(), n + 3);
    files
}

/// Every encrypted file under `home`'s store (`*.age`, `.ACCOUNT.answer`).
fn sealed_files(home: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), out);
            } else if name.ends_with(".age") || (name.starts_with('.') && name.ends_with(".answer"))
            {
                out.push(e.path());
            }
        }
    }
    let mut out = Vec::new();
    walk(&home.join("store"), &mut out);
    out.sort();
    out
}

/// Temp files (`.NAME.tmp-PID`) anywhere in `home`.
fn temp_files(home: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), out);
            } else if e.file_name().to_string_lossy().contains(".tmp-") {
                out.push(e.path());
            }
        }
    }
    let mut out = Vec::new();
    walk(home, &mut out);
    out
}

fn have_age_cli() -> bool {
    let have = std::process::Command::new("age")
        .arg("--version")
        .output()
        .is_ok();
    if !have {
        assert!(
            std::env::var_os("OUTREACH_REQUIRE_AGE_CLI").is_none(),
            "the age CLI is required but missing"
        );
        eprintln!("the `age` CLI is not installed: checking with the age crate only");
    }
    have
}

/// The identity file's text, unsealed with `passphrase` when it is
/// passphrase-protected.
fn identity_text(path: &Path, passphrase: Option<&str>) -> String {
    let raw = std::fs::read(path).unwrap();
    if !raw.starts_with(b"age-encryption.org/") && !raw.starts_with(b"-----BEGIN AGE") {
        return String::from_utf8(raw).unwrap();
    }
    let pass = passphrase.expect("a passphrase for the sealed identity");
    let ident = age::scrypt::Identity::new(age::secrecy::SecretString::from(pass.to_string()));
    String::from_utf8(open_with(&raw, &[&ident as &dyn age::Identity]).unwrap()).unwrap()
}

fn open_with(raw: &[u8], ids: &[&dyn age::Identity]) -> Option<Vec<u8>> {
    use std::io::Read;
    let r = age::armor::ArmoredReader::new(std::io::BufReader::new(raw));
    let dec = age::Decryptor::new(r).ok()?;
    let mut out = Vec::new();
    dec.decrypt(ids.iter().copied())
        .ok()?
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

/// The X25519 keys an identity file's text holds, in order.
fn keys_in(text: &str) -> Vec<age::x25519::Identity> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("AGE-SECRET-KEY-"))
        .map(|l| l.parse().unwrap())
        .collect()
}

/// Every file opens with the identity file alone: parsed by the age crate
/// as the age tool parses it, and with the `age` CLI when it is there.
/// Returns how many files open with each of the file's keys alone.
fn assert_identity_opens_all(
    home: &Path,
    files: &[PathBuf],
    passphrase: Option<&str>,
    age_cli: bool,
    when: &str,
) -> Vec<usize> {
    let identity = home.join("identity.txt");
    assert!(
        !home.join("identity.txt.next").exists(),
        "{when}: a second identity file is needed"
    );
    let text = identity_text(&identity, passphrase);
    let parsed = age::IdentityFile::from_buffer(text.as_bytes())
        .unwrap()
        .into_identities()
        .unwrap();
    let all: Vec<&dyn age::Identity> = parsed
        .iter()
        .map(|i| i.as_ref() as &dyn age::Identity)
        .collect();
    let keys = keys_in(&text);
    let mut per_key = vec![0; keys.len()];
    let mut present = Vec::new();
    for f in files {
        let Ok(raw) = std::fs::read(f) else {
            panic!("{when}: {} is gone", f.display());
        };
        present.push(f.clone());
        assert!(
            open_with(&raw, &all).is_some(),
            "{when}: {} does not open with {} alone",
            f.display(),
            identity.display()
        );
        for (k, key) in keys.iter().enumerate() {
            if open_with(&raw, &[key as &dyn age::Identity]).is_some() {
                per_key[k] += 1;
            }
        }
    }
    if age_cli && passphrase.is_none() {
        for chunk in present.chunks(16) {
            let children: Vec<_> = chunk
                .iter()
                .map(|f| {
                    let child = std::process::Command::new("age")
                        .arg("-d")
                        .arg("-i")
                        .arg(&identity)
                        .arg(f)
                        .stdout(Stdio::null())
                        .stderr(Stdio::piped())
                        .spawn()
                        .unwrap();
                    (f, child)
                })
                .collect();
            for (f, child) in children {
                let out = child.wait_with_output().unwrap();
                assert!(
                    out.status.success(),
                    "{when}: `age -d -i {} {}` fails: {}",
                    identity.display(),
                    f.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    per_key
}

/// `outreach accounts --json` reads every one of the `n` records.
fn assert_binary_reads_all(home: &support::Home, n: usize, when: &str) {
    let r = home.run(&["accounts", "--json"], None);
    assert_eq!(r.code, 0, "{when}: {}", r.all());
    let list: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), n, "{when}: {}", r.stdout);
    for a in list {
        assert!(a["error"].is_null(), "{when}: {a}");
    }
}

/// With records in the store, a missing identity is an error that names
/// where it was expected and how to restore it, and changes nothing; only
/// an empty store gets a new identity.
#[test]
fn a_missing_identity_is_an_error_when_the_store_holds_records() {
    let home = bare_home();
    let files = seed(home.path(), 2);
    let identity = home.path().join("identity.txt");
    let backup = std::fs::read(&identity).unwrap();
    let before: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    std::fs::remove_file(&identity).unwrap();
    for args in [&["accounts"][..], &["accounts", "--json"], &["status"]] {
        let r = home.run(args, None);
        assert_ne!(r.code, 0, "{args:?}: {}", r.all());
        let msg = r.all();
        for want in [
            &format!("the identity file {} is missing", identity.display())[..],
            &home.path().join("store").display().to_string(),
            "restore the identity file from your backup",
            "the records were left untouched",
            "chmod 600",
        ] {
            assert!(msg.contains(want), "{args:?}: no `{want}` in:\n{msg}");
        }
        assert!(!identity.exists(), "{args:?} created a new identity");
    }
    let after: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert_eq!(before, after, "the records changed");

    // Restoring the backup is all it takes.
    write_atomic(&identity, &backup).unwrap();
    assert_binary_reads_all(&home, 2, "restored");

    // An escrowed answer alone, or an auxiliary secret alone, counts too.
    for only in ["store/x/.alice.answer", "store/.aux/app.age"] {
        let home = bare_home();
        let path = home.path().join(only);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        write_atomic(&path, b"age-encryption.org/v1\n").unwrap();
        let r = home.run(&["accounts"], None);
        assert_ne!(r.code, 0, "{only}: {}", r.all());
        assert!(r.all().contains("is missing"), "{only}: {}", r.all());
        assert!(!home.path().join("identity.txt").exists(), "{only}");
    }

    // An empty store (lock files and all) gets a new identity, 0600.
    let home = bare_home();
    std::fs::create_dir_all(home.path().join("store/x")).unwrap();
    std::fs::write(home.path().join("store/x/.alice.lock"), b"").unwrap();
    let r = home.run(&["accounts"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(home.path().join("identity.txt")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}

/// The identity, the daemon's token file and records that other users can
/// read are each warned about once per process, by name, with the fix.
#[test]
fn files_open_to_other_users_are_warned_about_once() {
    use std::os::unix::fs::PermissionsExt;
    let mut home = bare_home();
    home.extra_config
        .push_str("\n[daemon]\nlisten = \"127.0.0.1:0\"\n");
    let files = seed(home.path(), 3);
    let identity = home.path().join("identity.txt");
    let token = home.path().join("daemon.token");
    write_atomic(&token, format!("{}\n", "t".repeat(64)).as_bytes()).unwrap();
    let r = home.run(&["accounts"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!r.stderr.contains("chmod"), "{}", r.stderr);

    let record = files.iter().find(|f| f.ends_with("a001.age")).unwrap();
    for (path, mode) in [(&identity, 0o644), (record, 0o640), (&token, 0o604)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let r = home.run(&["accounts"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    for (path, mode) in [(&identity, "0644"), (record, "0640")] {
        let fix = format!("chmod 600 {}", path.display());
        assert_eq!(r.stderr.matches(&fix).count(), 1, "{fix}:\n{}", r.stderr);
        let named = format!("{} is open to other users (mode {mode})", path.display());
        assert!(r.stderr.contains(&named), "{named}:\n{}", r.stderr);
    }
    // The daemon reads its token file at start.
    let r = home.run(&["daemon", "--exit-after", "0.2"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let fix = format!("chmod 600 {}", token.display());
    assert_eq!(r.stderr.matches(&fix).count(), 1, "{fix}:\n{}", r.stderr);
    assert!(
        r.stderr.contains("the control API token file"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains(&"t".repeat(32)), "the token was printed");

    for path in [&identity, record, &token] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let r = home.run(&["accounts"], None);
    assert!(!r.stderr.contains("chmod"), "{}", r.stderr);
}

/// When to kill a `store rekey`.
#[derive(Clone, Copy, Debug)]
enum Kill {
    /// This long after it started.
    After(Duration),
    /// Once it has changed the identity file.
    KeyChanged,
    /// Once it has rewritten (renamed a new version over) this many files.
    Rewrote(usize),
}

/// Start `outreach store rekey` and SIGKILL it at `when` (or after a
/// minute). Whether it had finished by itself first.
fn kill_rekey(home: &support::Home, files: &[PathBuf], when: Kill) -> bool {
    use std::os::unix::fs::MetadataExt;
    let identity = home.path().join("identity.txt");
    let inode = |p: &Path| std::fs::metadata(p).map(|m| m.ino()).ok();
    let before_identity = inode(&identity);
    let before: Vec<Option<u64>> = files.iter().map(|f| inode(f)).collect();
    let rewritten = || {
        files
            .iter()
            .zip(&before)
            .filter(|(f, b)| inode(f) != **b)
            .count()
    };
    let mut child = home
        .command(&["store", "rekey"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        let due = match when {
            Kill::After(d) => start.elapsed() >= d,
            Kill::KeyChanged => inode(&identity) != before_identity,
            Kill::Rewrote(n) => rewritten() >= n,
        };
        if due || start.elapsed() > Duration::from_secs(60) {
            break;
        }
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_micros(300));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    false
}

/// A finished rekey: one key in the identity file, no marker, no temp
/// files, and every file opens with that key. Returns its public key.
fn assert_rekey_finished(
    home: &support::Home,
    files: &[PathBuf],
    passphrase: Option<&str>,
    age_cli: bool,
    when: &str,
) -> String {
    let text = identity_text(&home.path().join("identity.txt"), passphrase);
    assert_eq!(keys_in(&text).len(), 1, "{when}: not one key");
    assert!(!text.contains("outreach-rekey-retiring"), "{when}");
    let per_key = assert_identity_opens_all(home.path(), files, passphrase, age_cli, when);
    assert_eq!(per_key, [files.len()], "{when}");
    assert_eq!(temp_files(home.path()), Vec::<PathBuf>::new(), "{when}");
    keys_in(&text)[0].to_public().to_string()
}

/// SIGKILL `outreach store rekey` at many points — while it starts, as it
/// puts the new key in, after 1, a quarter, half or all of the files — and
/// again while the next run resumes. After every kill,
/// every record (and escrowed answer and auxiliary secret) opens with the
/// identity file alone (`age -d -i identity.txt`, and the binary); the
/// next run finishes the move and leaves no temp files.
#[test]
fn a_killed_rekey_never_needs_more_than_the_identity_file() {
    const N: usize = 40;
    let home = bare_home();
    let files = seed(home.path(), N);
    let total = files.len();
    let age_cli = have_age_cli();

    let r = home.run(&["store", "rekey"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains(&format!("re-encrypted {} records", N + 1)),
        "{}",
        r.stdout
    );
    let mut key = assert_rekey_finished(&home, &files, None, age_cli, "a whole run");

    // A first kill, then a second one of the run that resumes the first.
    let plan = [
        (Kill::After(Duration::from_millis(2)), Kill::KeyChanged),
        (Kill::Rewrote(1), Kill::Rewrote(total / 2)),
        (
            Kill::Rewrote(total / 4),
            Kill::After(Duration::from_millis(5)),
        ),
        (Kill::Rewrote(total / 2), Kill::Rewrote(total)),
        // All files moved, the old key not yet out; then as it goes out.
        (Kill::Rewrote(total), Kill::KeyChanged),
    ];
    let (mut halfway, mut both_keys) = (0, 0);
    for (round, (first, second)) in plan.into_iter().enumerate() {
        for (i, when) in [first, second].into_iter().enumerate() {
            let what = format!("round {round}, kill {i} ({when:?})");
            kill_rekey(&home, &files, when);
            let per_key = assert_identity_opens_all(home.path(), &files, None, age_cli, &what);
            if per_key.len() == 2 {
                both_keys += 1;
                if per_key.iter().all(|&n| n > 0) {
                    halfway += 1;
                }
            }
            if i == 0 {
                // The binary reads every record too, and leaves no temp file.
                assert_binary_reads_all(&home, N, &what);
                assert_eq!(temp_files(home.path()), Vec::<PathBuf>::new(), "{what}");
            }
        }
        // The next run finishes the job.
        let r = home.run(&["store", "rekey"], None);
        assert_eq!(r.code, 0, "round {round}: {}", r.all());
        let now = assert_rekey_finished(&home, &files, None, age_cli, &format!("round {round}"));
        assert_ne!(now, key, "round {round}: the key did not change");
        key = now;
        assert_binary_reads_all(&home, N, &format!("round {round}, finished"));
    }
    assert!(
        both_keys >= 6,
        "only {both_keys} kills caught a rekey under way"
    );
    assert!(
        halfway >= 4,
        "only {halfway} kills caught the files half-moved"
    );
}

/// A passphrase-protected identity (`age -p`) stays sealed with its
/// passphrase (and its scrypt cost) through a rekey, killed or not.
#[test]
fn a_rekey_keeps_a_passphrase_protected_identity_sealed() {
    use age::secrecy::SecretString;
    const PASS: &str = "correct horse battery";
    let mut home = bare_home();
    let files = seed(home.path(), 20);
    let identity = home.path().join("identity.txt");
    let plain = std::fs::read(&identity).unwrap();
    // Sealed as `age -p` does, at a low cost to keep the test quick.
    let mut scrypt = age::scrypt::Recipient::new(SecretString::from(PASS.to_string()));
    scrypt.set_work_factor(12);
    let enc =
        age::Encryptor::with_recipients(std::iter::once(&scrypt as &dyn age::Recipient)).unwrap();
    let mut sealed = Vec::new();
    let mut w = enc.wrap_output(&mut sealed).unwrap();
    w.write_all(&plain).unwrap();
    w.finish().unwrap();
    write_atomic(&identity, &sealed).unwrap();
    home.env
        .push(("OUTREACH_IDENTITY_PASSPHRASE".into(), PASS.into()));
    let sealed_at_12 = |when: &str| {
        let raw = std::fs::read(&identity).unwrap();
        assert!(
            raw.starts_with(b"age-encryption.org/"),
            "{when}: not sealed"
        );
        let header = String::from_utf8_lossy(&raw[..raw.len().min(200)]).into_owned();
        let stanza = header
            .lines()
            .find(|l| l.starts_with("-> scrypt "))
            .unwrap();
        assert!(stanza.ends_with(" 12"), "{when}: {stanza}");
    };

    let finished = kill_rekey(&home, &files, Kill::Rewrote(10));
    assert!(!finished, "the rekey finished before the kill");
    sealed_at_12("killed");
    let per_key = assert_identity_opens_all(home.path(), &files, Some(PASS), false, "killed");
    assert_eq!(per_key.len(), 2, "killed: {per_key:?}");
    let r = home.run(&["store", "rekey"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    sealed_at_12("finished");
    assert_rekey_finished(&home, &files, Some(PASS), false, "finished");
    assert_binary_reads_all(&home, 20, "finished");
}

// ---------------------------------------------------------------------
// Backups through the real binary: `outreach backup` while the daemon
// publishes and refreshes, `outreach restore` on a clean home, and
// backups that are damaged or hostile.

mod backups {
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use serde_json::{Value, json};

    use super::support::daemon::{Daemon, start_daemon};
    use super::support::oauth::{CLIENT_ID, CLIENT_SECRET};
    use super::support::{self, Home, Run, World};
    use super::{bare_home, sealed_files, seed};

    const PASS_VAR: &str = "OUTREACH_BACKUP_PASSPHRASE";
    const PASSPHRASE: &str = "backup-PLANTED-passphrase-0c8e";
    const SEED_REFRESH: &str = "x-rot-refresh-PLANTED-seed";
    const SEED_ACCESS: &str = "x-rot-access-PLANTED-seed";

    impl Daemon {
        /// POST to the control API; `(0, error)` when no answer came (a
        /// request cut short is part of what these tests put up with).
        async fn call(&self, path: &str, body: Option<Value>) -> (u16, Value) {
            match self.try_call("POST", path, body).await {
                Ok(answer) => answer,
                Err(e) => (0, Value::String(e.to_string())),
            }
        }
    }

    /// Run `cmd` to its end; nothing planted may show in its output.
    fn finish(mut cmd: Command) -> Run {
        let out = cmd.stdin(Stdio::null()).output().expect("run outreach");
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        run.assert_no_secrets();
        run
    }

    /// A home like `like` (same fakes, config and environment) with nothing
    /// in it yet.
    fn clean_home_like(like: &Home) -> Home {
        let mut h = Home::new();
        h.endpoints = like.endpoints.clone();
        h.extra_config = like.extra_config.clone();
        h.env = like.env.clone();
        h
    }

    /// `posts --json` as post id → target → state of the post itself.
    fn journal(home: &Home) -> std::collections::BTreeMap<String, Vec<(String, String)>> {
        let r = home.run(&["posts", "--json"], None);
        assert_eq!(r.code, 0, "{}", r.all());
        let v: Value = serde_json::from_str(&r.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let states = e["deliveries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|d| d["index"] == 0)
                    .map(|d| {
                        (
                            d["target"].as_str().unwrap().to_string(),
                            d["state"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect();
                (e["post"]["id"].as_str().unwrap().to_string(), states)
            })
            .collect()
    }

    fn accounts(home: &Home) -> Vec<String> {
        let r = home.run(&["accounts", "--json"], None);
        assert_eq!(r.code, 0, "{}", r.all());
        let v: Value = serde_json::from_str(&r.stdout).unwrap();
        let mut ids: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                assert!(a["error"].is_null(), "{a}");
                a["id"].as_str().unwrap().to_string()
            })
            .collect();
        ids.sort();
        ids
    }

    /// Every file under `dir`, relative, with its bytes.
    fn tree(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
        fn walk(base: &Path, dir: &Path, out: &mut std::collections::BTreeMap<PathBuf, Vec<u8>>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let t = e.file_type().unwrap();
                if t.is_dir() {
                    walk(base, &e.path(), out);
                } else {
                    out.insert(
                        e.path().strip_prefix(base).unwrap().to_path_buf(),
                        std::fs::read(e.path()).unwrap(),
                    );
                }
            }
        }
        let mut out = Default::default();
        if dir.exists() {
            walk(dir, dir, &mut out);
        }
        out
    }

    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// The refresh tokens presented to X's token endpoint, in order, with
    /// when each request arrived.
    fn presented_refresh_tokens(x: &support::Fake) -> Vec<(String, Instant)> {
        x.seen()
            .iter()
            .filter(|s| s.path == "/2/oauth2/token")
            .filter_map(|s| {
                let form: std::collections::HashMap<String, String> =
                    url::form_urlencoded::parse(s.body.as_bytes())
                        .into_owned()
                        .collect();
                (form.get("grant_type").map(String::as_str) == Some("refresh_token"))
                    .then(|| (form["refresh_token"].clone(), s.at))
            })
            .collect()
    }

    /// A backup made while the daemon publishes and refreshes restores, on
    /// a clean home, every account and every post that was published
    /// before it began; re-sending those posts from the restored home
    /// posts nothing again; and the rotating refresh token it holds is one
    /// that was current at one moment of the backup (copied under the
    /// refresh lease, never between an exchange and its write).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backup_taken_while_the_daemon_works_restores_every_account_and_post_once() {
        let mut w = World::new();
        w.home
            .endpoint("x", "token", &format!("{}/2/oauth2/token", w.x.url()));
        w.home.extra_config.push_str(&format!(
            "\n[platforms.x]\ndeclared_limits = false\nclient_id = \"{CLIENT_ID}\"\nclient_secret_env = \"OUTREACH_TEST_CLIENT_SECRET\"\n\n[daemon]\nlisten = \"127.0.0.1:0\"\ndebounce_ms = 50\ndue_check_secs = 1\ngrace_secs = 20\n"
        ));
        w.home
            .env
            .push(("OUTREACH_TEST_CLIENT_SECRET".into(), CLIENT_SECRET.into()));
        w.home.env.push((PASS_VAR.into(), PASSPHRASE.into()));
        let w = w.with_accounts();
        // A fourth account whose refresh token X rotates on every use.
        {
            let mut o = w.x.state.oauth.lock().unwrap();
            o.refresh.insert(SEED_REFRESH.into());
            o.access.insert(
                SEED_ACCESS.into(),
                Instant::now() + Duration::from_secs(7200),
            );
        }
        let tokens = w.home.path().join("tokens.json");
        std::fs::write(
            &tokens,
            json!({"twitter": {"accessToken": SEED_ACCESS, "refreshToken": SEED_REFRESH,
                "expiresIn": 7200, "scope": "tweet.read tweet.write offline.access",
                "profile": {"id": "7", "username": "rot"},
                "createdAt": chrono::Utc::now().to_rfc3339()}})
            .to_string(),
        )
        .unwrap();
        let r = w.home.run(
            &["import", tokens.to_str().unwrap(), "--account", "rot"],
            None,
        );
        assert_eq!(r.code, 0, "{}", r.all());
        let before = accounts(&w.home);
        assert_eq!(
            before,
            ["linkedin/default", "mastodon/social", "x/default", "x/rot"]
        );
        *w.x.state.delay.lock().unwrap() = Duration::from_millis(15);

        let d = Arc::new(start_daemon(&w.home));
        let stop = Arc::new(AtomicBool::new(false));
        let post = |i: usize| {
            json!({"id": format!("bk-{i}"), "text": format!("backup stream {i}"),
                   "to": ["x/default", "mastodon/social"]})
        };
        // Two publishers and a refresher, until told to stop.
        let mut publishers = Vec::new();
        for k in 0..2 {
            let (d, stop) = (d.clone(), stop.clone());
            publishers.push(tokio::spawn(async move {
                let mut done = Vec::new();
                let mut i = k;
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let (code, v) = d.call("/publish", Some(post(i))).await;
                    assert_eq!(code, 200, "bk-{i}: {v}");
                    done.push((i, started, Instant::now()));
                    i += 2;
                }
                done
            }));
        }
        let refresher = {
            let (d, stop) = (d.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let (code, v) = d.call("/accounts/x/rot/refresh", None).await;
                    assert_eq!(code, 200, "{v}");
                    n += 1;
                }
                n
            })
        };
        tokio::time::sleep(Duration::from_millis(600)).await;

        let file = w.home.path().join("outreach-backup.tar.zst.age");
        let cmd = w
            .home
            .command(&["backup", file.to_str().unwrap(), "--include-identity"]);
        let refreshes_before = w.x.state.oauth.lock().unwrap().refresh_calls;
        let t0 = Instant::now();
        let r = tokio::task::spawn_blocking(move || finish(cmd))
            .await
            .unwrap();
        let t1 = Instant::now();
        let refreshes_during = w.x.state.oauth.lock().unwrap().refresh_calls - refreshes_before;
        stop.store(true, Ordering::SeqCst);
        let mut published = Vec::new();
        for p in publishers {
            published.extend(p.await.unwrap());
        }
        let refreshes = refresher.await.unwrap();
        Arc::try_unwrap(d).ok().unwrap().stop();
        // And one made with nothing running: its rotating token is current.
        let quiet = w.home.path().join("quiet.tar.zst");
        let q = w.home.run(&["backup", quiet.to_str().unwrap()], None);
        assert_eq!(q.code, 0, "{}", q.all());

        assert_eq!(r.code, 0, "{}", r.all());
        assert!(
            r.stdout.contains("backed up 4 accounts")
                && r.stdout.contains("the journal")
                && r.stdout.contains("the identity")
                && r.stdout.contains("encrypted with your passphrase"),
            "{}",
            r.stdout
        );
        assert!(
            refreshes_during > 0 && refreshes > 0,
            "the refreshes should really run during the backup"
        );
        assert!(
            published.iter().any(|(_, s, e)| *s < t1 && *e > t0),
            "publishes should really run during the backup"
        );
        let before_backup: Vec<usize> = published
            .iter()
            .filter(|(_, _, e)| *e < t0)
            .map(|(i, _, _)| *i)
            .collect();
        assert!(!before_backup.is_empty());

        // The file: 0600, sealed with the passphrase, nothing readable in it.
        assert_eq!(mode(&file), 0o600);
        let raw = std::fs::read(&file).unwrap();
        assert!(raw.starts_with(b"age-encryption.org/v1\n-> scrypt "));
        for plain in [
            &b"PLANTED"[..],
            b"AGE-SECRET-KEY",
            b"backup stream",
            b"SQLite",
        ] {
            assert!(
                !raw.windows(plain.len()).any(|win| win == plain),
                "{} is readable in the backup",
                String::from_utf8_lossy(plain)
            );
        }

        // Restore on a clean home.
        let fresh = clean_home_like(&w.home);
        let r = fresh.run(&["restore", file.to_str().unwrap()], None);
        assert_eq!(r.code, 0, "{}", r.all());
        assert!(r.stdout.contains("restored 4 accounts"), "{}", r.stdout);
        assert!(
            r.stdout.contains("the backed-up config was not written"),
            "{}",
            r.stdout
        );
        assert_eq!(
            std::fs::read(fresh.path().join("identity.txt")).unwrap(),
            std::fs::read(w.home.path().join("identity.txt")).unwrap()
        );
        assert_eq!(mode(&fresh.path().join("identity.txt")), 0o600);
        for f in sealed_files(fresh.path()) {
            assert_eq!(mode(&f), 0o600, "{}", f.display());
        }
        assert_eq!(accounts(&fresh), before);
        // No escrowed answer was caught half-way: exchanges happen under
        // the lease the backup copies under.
        assert!(!fresh.path().join("store/x/.rot.answer").exists());

        // Every post published before the backup began is there, published.
        let restored = journal(&fresh);
        for i in &before_backup {
            let states = &restored[&format!("bk-{i}")];
            assert_eq!(states.len(), 2, "bk-{i}: {states:?}");
            for (target, state) in states {
                assert_eq!(state, "published", "bk-{i} {target}");
            }
        }

        // The rotating refresh token is one X had issued and that was
        // current at some moment of the backup.
        let store = super::open(fresh.path(), "identity.txt");
        use outreach::store::CredentialStore as _;
        let rec = store
            .load(&outreach::store::AccountId::new("x", "rot").unwrap())
            .unwrap();
        let token = rec.refresh_token.as_ref().unwrap().expose().to_string();
        let chain = presented_refresh_tokens(&w.x);
        let live = w.x.state.oauth.lock().unwrap().refresh.contains(&token);
        match chain.iter().position(|(t, _)| *t == token) {
            Some(j) => {
                assert!(
                    chain[j].1 > t0,
                    "the backup holds a token spent before it began"
                );
                assert!(
                    j == 0 || chain[j - 1].1 < t1,
                    "the backup holds a token issued after it ended"
                );
            }
            None => {
                assert!(live, "the backup holds a token X never issued");
                assert!(
                    chain.last().is_none_or(|(_, at)| *at < t1),
                    "the backup holds a token issued after it ended"
                );
            }
        }
        drop(store);

        // Exactly once across the restore: sending again every post whose
        // deliveries the restored journal has settled (published, or in
        // flight at the snapshot and so `unknown` now) posts nothing.
        let x_texts = |fake: &support::Fake| -> Vec<String> {
            fake.posts()
                .iter()
                .map(|(_, b)| b["text"].as_str().unwrap_or_default().to_string())
                .collect()
        };
        let md_texts = |fake: &support::Fake| -> Vec<String> {
            fake.posts()
                .iter()
                .map(|(_, b)| b["status"].as_str().unwrap_or_default().to_string())
                .collect()
        };
        let restored = journal(&fresh);
        let settled: Vec<String> = restored
            .iter()
            .filter(|(_, states)| {
                states
                    .iter()
                    .all(|(_, s)| s == "published" || s == "unknown")
            })
            .map(|(id, _)| id.clone())
            .collect();
        for i in &before_backup {
            assert!(settled.contains(&format!("bk-{i}")));
        }
        let (x_before, md_before) = (x_texts(&w.x), md_texts(&w.mastodon));
        for i in &before_backup {
            let text = format!("backup stream {i}");
            assert_eq!(x_before.iter().filter(|t| **t == text).count(), 1);
            assert_eq!(md_before.iter().filter(|t| **t == text).count(), 1);
        }
        eprintln!(
            "{} posts before the backup, {} in the restored journal ({} settled), {refreshes_during} refreshes during it; restored refresh token {}",
            before_backup.len(),
            restored.len(),
            settled.len(),
            if live { "still current" } else { "spent since" }
        );
        let d = start_daemon(&fresh);
        for id in &settled {
            let i: usize = id.strip_prefix("bk-").unwrap().parse().unwrap();
            let (code, v) = d.call("/publish", Some(post(i))).await;
            if restored[id].iter().all(|(_, s)| s == "published") {
                assert_eq!(code, 200, "{id}: {v}");
            }
        }
        d.stop();
        assert_eq!(x_texts(&w.x), x_before, "X got a post again");
        assert_eq!(
            md_texts(&w.mastodon),
            md_before,
            "Mastodon got a post again"
        );

        // The restored home is a home: a second restore is refused.
        let r = fresh.run(&["restore", file.to_str().unwrap()], None);
        assert_eq!(r.code, 2, "{}", r.all());
        assert!(
            r.stderr.contains("never writes over anything"),
            "{}",
            r.stderr
        );
        // The quiet backup, with the identity kept apart, restores an
        // account whose rotating refresh token still works.
        let again = clean_home_like(&w.home);
        std::fs::copy(
            w.home.path().join("identity.txt"),
            again.path().join("identity.txt"),
        )
        .unwrap();
        let r = again.run(&["restore", quiet.to_str().unwrap()], None);
        assert_eq!(r.code, 0, "{}", r.all());
        let calls = w.x.state.oauth.lock().unwrap().refresh_calls;
        let r = again.run(&["refresh", "x/rot"], None);
        assert_eq!(r.code, 0, "{}", r.all());
        assert_eq!(w.x.state.oauth.lock().unwrap().refresh_calls, calls + 1);
        assert_eq!(w.x.state.oauth.lock().unwrap().reused, 0);
    }

    /// A plain backup (no identity): every file comes back byte for byte
    /// under `--to DIR`, opens with the identity kept elsewhere, and no
    /// restore ever writes over anything.
    #[test]
    fn a_backup_restores_every_file_as_it_was_and_never_over_anything() {
        let home = bare_home();
        let files = seed(home.path(), 3);
        let r = home.run(&["posts", "--json"], None);
        assert_eq!(r.code, 0, "{}", r.all());
        let file = home.path().join("nightly.tar.zst");
        let r = home.run(&["backup", file.to_str().unwrap()], None);
        assert_eq!(r.code, 0, "{}", r.all());
        assert!(
            r.stdout
                .contains("backed up 3 accounts (6 files from the store, still encrypted)"),
            "{}",
            r.stdout
        );
        assert!(
            r.stdout.contains("the identity is not in this backup"),
            "{}",
            r.stdout
        );
        let raw = std::fs::read(&file).unwrap();
        assert!(raw.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]), "zstd");
        assert_eq!(mode(&file), 0o600);
        // No staging or temp files are left beside it.
        let left: Vec<_> = std::fs::read_dir(home.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".nightly"))
            .collect();
        assert!(left.is_empty(), "{left:?}");

        // A backup never replaces a file.
        let r = home.run(&["backup", file.to_str().unwrap()], None);
        assert_eq!(r.code, 2, "{}", r.all());
        assert!(r.stderr.contains("exists"), "{}", r.stderr);
        assert_eq!(std::fs::read(&file).unwrap(), raw);

        let dest = home.path().join("restored");
        let r = home.run(
            &[
                "restore",
                file.to_str().unwrap(),
                "--to",
                dest.to_str().unwrap(),
            ],
            None,
        );
        assert_eq!(r.code, 0, "{}", r.all());
        assert!(r.stdout.contains("holds no identity"), "{}", r.stdout);
        let (was, now) = (tree(&home.path().join("store")), tree(&dest.join("store")));
        for f in &files {
            let rel = f.strip_prefix(home.path().join("store")).unwrap();
            assert_eq!(now.get(rel), was.get(rel), "{}", rel.display());
        }
        assert_eq!(
            now.keys().collect::<Vec<_>>(),
            files
                .iter()
                .map(|f| f.strip_prefix(home.path().join("store")).unwrap())
                .collect::<Vec<_>>()
        );
        assert_eq!(
            std::fs::read(dest.join("outreach.toml")).unwrap(),
            std::fs::read(home.config_path()).unwrap()
        );
        assert!(dest.join("outbox.sqlite").is_file());
        assert!(!dest.join("identity.txt").exists());
        assert!(!dest.join("outbox.sqlite-wal").exists());
        assert_eq!(mode(&dest), 0o700);
        assert_eq!(mode(&dest.join("store")), 0o700);

        // With the identity kept elsewhere, the restored folder is a home.
        std::fs::copy(home.path().join("identity.txt"), dest.join("identity.txt")).unwrap();
        std::fs::create_dir_all(dest.join("plugins")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_outreach"));
        cmd.arg("--config")
            .arg(dest.join("outreach.toml"))
            .args(["accounts", "--json"])
            .env_remove("OUTREACH_CONFIG");
        let r = finish(cmd);
        assert_eq!(r.code, 0, "{}", r.all());
        let list: Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
        assert!(
            list.as_array()
                .unwrap()
                .iter()
                .all(|a| a["error"].is_null())
        );

        // Never over anything: a folder that holds something, or the
        // configured store that holds records.
        let before = tree(&dest);
        let r = home.run(
            &[
                "restore",
                file.to_str().unwrap(),
                "--to",
                dest.to_str().unwrap(),
            ],
            None,
        );
        assert_eq!(r.code, 2, "{}", r.all());
        assert!(
            r.stderr.contains("is a folder that is not empty"),
            "{}",
            r.stderr
        );
        assert_eq!(tree(&dest), before);
        let before = tree(home.path());
        let r = home.run(&["restore", file.to_str().unwrap()], None);
        assert_eq!(r.code, 2, "{}", r.all());
        assert!(
            r.stderr
                .contains(&home.path().join("store").display().to_string())
                && r.stderr.contains("nothing was restored"),
            "{}",
            r.stderr
        );
        assert_eq!(tree(home.path()), before);

        // Something that is not a backup.
        let r = home.run(
            &[
                "restore",
                home.config_path().to_str().unwrap(),
                "--to",
                home.path().join("other").to_str().unwrap(),
            ],
            None,
        );
        assert_eq!(r.code, 2, "{}", r.all());
        assert!(r.stderr.contains("not an outreach backup"), "{}", r.stderr);
        assert!(!home.path().join("other").exists());
    }

    /// One entry of a hand-made archive.
    struct Raw {
        name: Vec<u8>,
        kind: tar::EntryType,
        data: Vec<u8>,
        link: Option<Vec<u8>>,
    }

    fn file_entry(name: &str, data: &[u8]) -> Raw {
        Raw {
            name: name.as_bytes().to_vec(),
            kind: tar::EntryType::Regular,
            data: data.to_vec(),
            link: None,
        }
    }

    /// A plain tar: a manifest listing `listed` (path, bytes), then
    /// `entries` as they are — names and links written byte for byte, so
    /// `..`, absolute paths and links go in unchecked.
    fn archive(listed: &[(&str, &[u8])], entries: &[Raw]) -> Vec<u8> {
        use sha2::Digest;
        let manifest = json!({
            "format": "outreach-backup", "version": 1, "outreach_version": "0.1.0",
            "created_at": "2026-01-01T00:00:00Z",
            "contents": {"accounts": 1, "store_files": 1, "journal": false, "posts": null,
                         "config": false, "identity": false},
            "entries": listed.iter().map(|(p, b)| json!({
                "path": p, "size": b.len(), "sha256": hex(&sha2::Sha256::digest(b))
            })).collect::<Vec<_>>(),
        })
        .to_string();
        let mut b = tar::Builder::new(Vec::new());
        let mut all = vec![file_entry("outreach-backup.json", manifest.as_bytes())];
        all.extend(entries.iter().map(|e| Raw {
            name: e.name.clone(),
            kind: e.kind,
            data: e.data.clone(),
            link: e.link.clone(),
        }));
        for e in &all {
            let mut h = tar::Header::new_old();
            h.as_old_mut().name[..e.name.len()].copy_from_slice(&e.name);
            if let Some(l) = &e.link {
                h.as_old_mut().linkname[..l.len()].copy_from_slice(l);
            }
            h.set_entry_type(e.kind);
            h.set_size(e.data.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            b.append(&h, &e.data[..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// `outreach restore FILE --to DEST` is refused with `expect` in its
    /// message, and nothing is written: DEST does not exist afterwards and
    /// nothing appeared anywhere in the home.
    fn refused(home: &Home, file: &Path, expect: &str) -> Run {
        let before: Vec<PathBuf> = tree(home.path()).into_keys().collect();
        let dest = home.path().join("dest");
        let r = home.run(
            &[
                "restore",
                file.to_str().unwrap(),
                "--to",
                dest.to_str().unwrap(),
            ],
            None,
        );
        assert_eq!(r.code, 2, "{}: {}", file.display(), r.all());
        assert!(
            r.stderr.contains(expect) && r.stderr.contains("nothing was restored"),
            "{}: expected {expect:?}: {}",
            file.display(),
            r.stderr
        );
        assert!(
            !dest.exists(),
            "{}: the destination was left",
            file.display()
        );
        let after: Vec<PathBuf> = tree(home.path()).into_keys().collect();
        assert_eq!(after, before, "{}: files appeared", file.display());
        r
    }

    /// Truncated, corrupt, hostile (`../`, absolute, links, unlisted or
    /// changed entries) and wrong-passphrase backups are refused with a
    /// clear message, write nothing, and print no secret.
    #[test]
    fn damaged_hostile_or_locked_backups_are_refused_and_restore_nothing() {
        let mut home = bare_home();
        seed(home.path(), 2);
        let r = home.run(&["posts", "--json"], None);
        assert_eq!(r.code, 0, "{}", r.all());
        let good = home.path().join("good.tar.zst");
        assert_eq!(home.run(&["backup", good.to_str().unwrap()], None).code, 0);
        let raw = std::fs::read(&good).unwrap();
        let base = home.path().to_path_buf();
        let put = |name: &str, bytes: &[u8]| {
            let p = base.join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };

        // Cut off, or one byte changed.
        let cut = put("cut.tar.zst", &raw[..raw.len() / 2]);
        refused(&home, &cut, "is truncated or corrupt");
        let cut = put("cut-end.tar.zst", &raw[..raw.len() - 9]);
        refused(&home, &cut, "is truncated or corrupt");
        let mut flipped = raw.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x40;
        let bad = put("flipped.tar.zst", &flipped);
        let r = refused(&home, &bad, "");
        assert!(
            r.stderr.contains("truncated or corrupt") || r.stderr.contains("checksum"),
            "{}",
            r.stderr
        );

        // Hand-made archives.
        let record = b"age-encryption.org/v1\nnot really";
        let ok = ("store/x/a.age", &record[..]);
        let escape = home.path().join("escaped.age");
        let p = put(
            "dotdot.tar",
            &archive(
                &[ok],
                &[
                    file_entry("store/x/a.age", record),
                    file_entry("store/../../escaped.age", record),
                ],
            ),
        );
        refused(&home, &p, "`..`");
        let p = put(
            "dotdot-first.tar",
            &archive(&[ok], &[file_entry("../escaped.age", record)]),
        );
        refused(&home, &p, "`..`");
        let p = put(
            "listed-dotdot.tar",
            &archive(&[("store/../escaped.age", &record[..])], &[]),
        );
        refused(&home, &p, "`..`");
        let abs = escape.to_str().unwrap().to_string();
        let p = put("absolute.tar", &archive(&[ok], &[file_entry(&abs, record)]));
        refused(&home, &p, "an absolute path");
        assert!(!escape.exists());
        let p = put(
            "symlink.tar",
            &archive(
                &[ok],
                &[Raw {
                    name: b"store/x/a.age".to_vec(),
                    kind: tar::EntryType::Symlink,
                    data: Vec::new(),
                    link: Some(b"/etc/passwd".to_vec()),
                }],
            ),
        );
        refused(&home, &p, "a symbolic link");
        let p = put(
            "hardlink.tar",
            &archive(
                &[ok],
                &[Raw {
                    name: b"store/x/a.age".to_vec(),
                    kind: tar::EntryType::Link,
                    data: Vec::new(),
                    link: Some(b"../../identity.txt".to_vec()),
                }],
            ),
        );
        refused(&home, &p, "a hard link");
        let p = put(
            "changed.tar",
            &archive(
                &[ok],
                &[file_entry(
                    "store/x/a.age",
                    b"age-encryption.org/v1\nsomething else",
                )],
            ),
        );
        refused(&home, &p, "does not match its checksum");
        let p = put(
            "unlisted.tar",
            &archive(
                &[ok],
                &[
                    file_entry("store/x/a.age", record),
                    file_entry("store/x/b.age", record),
                ],
            ),
        );
        refused(&home, &p, "its manifest does not list");
        let p = put("missing.tar", &archive(&[ok], &[]));
        refused(&home, &p, "entries are missing");
        let p = put(
            "foreign.tar",
            &archive(
                &[("etc/cron.d/job", &record[..])],
                &[file_entry("etc/cron.d/job", record)],
            ),
        );
        refused(&home, &p, "not part of an outreach backup");
        let p = put("empty.tar", b"");
        refused(&home, &p, "is empty");
        // The good one still restores.
        let dest = home.path().join("dest");
        let r = home.run(
            &[
                "restore",
                good.to_str().unwrap(),
                "--to",
                dest.to_str().unwrap(),
            ],
            None,
        );
        assert_eq!(r.code, 0, "{}", r.all());
        std::fs::remove_dir_all(&dest).unwrap();

        // With the identity: sealed with a passphrase.
        home.env.push((PASS_VAR.into(), PASSPHRASE.into()));
        let sealed = home.path().join("sealed.tar.zst.age");
        let r = home.run(
            &["backup", sealed.to_str().unwrap(), "--include-identity"],
            None,
        );
        assert_eq!(r.code, 0, "{}", r.all());
        home.env.retain(|(k, _)| k != PASS_VAR);
        // No passphrase, and no terminal to ask at.
        refused(&home, &sealed, "set OUTREACH_BACKUP_PASSPHRASE");
        home.env
            .push((PASS_VAR.into(), "backup-PLANTED-wrong-guess".into()));
        refused(&home, &sealed, "cannot be decrypted with that passphrase");
        home.env.retain(|(k, _)| k != PASS_VAR);
        home.env.push((PASS_VAR.into(), PASSPHRASE.into()));
        let raw = std::fs::read(&sealed).unwrap();
        let cut = put("sealed-cut.age", &raw[..raw.len() - 100]);
        refused(&home, &cut, "is truncated or corrupt");
        let r = home.run(
            &[
                "restore",
                sealed.to_str().unwrap(),
                "--to",
                dest.to_str().unwrap(),
            ],
            None,
        );
        assert_eq!(r.code, 0, "{}", r.all());
        assert_eq!(
            std::fs::read(dest.join("identity.txt")).unwrap(),
            std::fs::read(home.path().join("identity.txt")).unwrap()
        );
        assert_eq!(mode(&dest.join("identity.txt")), 0o600);
    }
}

/// Issue 11: an OS error is printed once, after what could not be done and
/// on what — not twice (`Is a directory (os error 21): Is a directory (os
/// error 21)`) because it was both in the message and its source.
#[test]
fn os_errors_are_printed_once() {
    let home = support::Home::new();
    // The identity is a folder.
    std::fs::create_dir_all(home.path().join("identity.txt")).unwrap();
    let r = home.run(&["accounts"], None);
    assert_eq!(r.code, 2, "{}", r.all());
    let error = r.stderr.lines().find(|l| l.starts_with("error:")).unwrap();
    assert!(
        error.contains(&format!(
            "the identity file {}",
            home.path().join("identity.txt").display()
        )),
        "{error}"
    );
    assert_eq!(error.matches("(os error 21)").count(), 1, "{error}");

    // The store folder is a file.
    std::fs::remove_dir(home.path().join("identity.txt")).unwrap();
    std::fs::write(home.path().join("store"), "not a folder").unwrap();
    let r = home.run(&["accounts"], None);
    assert_eq!(r.code, 2, "{}", r.all());
    let error = r.stderr.lines().find(|l| l.starts_with("error:")).unwrap();
    assert!(error.contains("store"), "{error}");
    assert_eq!(error.matches("(os error").count(), 1, "{error}");

    // The config file is a folder.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_outreach"))
        .arg("--config")
        .arg(home.path())
        .arg("plugins")
        .env_remove("OUTREACH_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot read the config file {}",
            home.path().display()
        )),
        "{stderr}"
    );
    assert_eq!(stderr.matches("it is a folder").count(), 1, "{stderr}");
}

/// Issue 18 (4): the identity file wrapped to a key an age plugin holds.
/// `age-plugin-fake` (tests/plugins/age-plugin-fake) stands in for a
/// hardware key: it counts its runs in the file `AGE_PLUGIN_FAKE_LOG`
/// names, refuses when `AGE_PLUGIN_FAKE_REFUSE` says why (a touch that
/// timed out), and `AGE_PLUGIN_FAKE_DEVICE` plugs in another device.
mod age_plugins {
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    use super::support::daemon::start_daemon;
    use super::support::{self, Fake, Home, Run, X_TOKEN};
    use super::{have_age_cli, keys_in, open_with};

    /// The folder holding `age-plugin-fake`, built once per test run (a
    /// native binary, in its own target folder).
    fn plugin_dir() -> PathBuf {
        static BUILT: OnceLock<PathBuf> = OnceLock::new();
        BUILT
            .get_or_init(|| {
                let root = support::repo_root();
                let target = root.join("target").join("age-plugin");
                let status = Command::new(env!("CARGO"))
                    .current_dir(&root)
                    .args(["build", "--quiet", "-p", "outreach-age-plugin-fake"])
                    .arg("--target-dir")
                    .arg(&target)
                    .status()
                    .expect("run cargo");
                assert!(status.success(), "building age-plugin-fake failed");
                let dir = target.join("debug");
                assert!(dir.join("age-plugin-fake").exists());
                dir
            })
            .clone()
    }

    /// PATH with the fake plugin's folder first.
    fn path_with_plugin() -> String {
        format!(
            "{}:{}",
            plugin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// A new identity of the fake plugin for `slot`: the identity file's
    /// text and its recipient.
    fn generate(slot: &str) -> (String, String) {
        let out = Command::new(plugin_dir().join("age-plugin-fake"))
            .args(["--generate", slot])
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let recipient = text
            .lines()
            .find_map(|l| l.strip_prefix("# recipient: "))
            .expect("the recipient comment")
            .trim()
            .to_string();
        assert!(recipient.starts_with("age1fake1"), "{recipient}");
        (text, recipient)
    }

    struct Wrapped {
        home: Home,
        x: Fake,
        /// Where the plugin notes each run.
        log: PathBuf,
        recipient: String,
    }

    impl Wrapped {
        /// How many times the plugin ran for each state machine since
        /// the log was last cleared: (identity-v1, recipient-v1).
        fn runs(&self) -> (usize, usize) {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let count = |what: &str| text.lines().filter(|l| l.starts_with(what)).count();
            (count("identity-v1 "), count("recipient-v1 "))
        }

        fn clear_runs(&self) {
            let _ = std::fs::remove_file(&self.log);
        }

        /// `args` through the binary, asserting success, and how often the
        /// plugin ran for it.
        fn ok(&self, args: &[&str], stdin: Option<&str>) -> (Run, (usize, usize)) {
            self.clear_runs();
            let r = self.home.run(args, stdin);
            assert_eq!(r.code, 0, "{args:?}: {}", r.all());
            assert_no_key(&r);
            (r, self.runs())
        }

        fn identity(&self) -> PathBuf {
            self.home.path().join("identity.txt")
        }

        fn plugin_identities(&self) -> PathBuf {
            self.home.path().join("identity-plugin.txt")
        }
    }

    /// No identity secret in anything outreach printed (planted tokens are
    /// checked by every run already).
    fn assert_no_key(r: &Run) {
        assert!(
            !r.all().contains("AGE-SECRET-KEY-"),
            "an identity leaked into the output:\n{}",
            r.all()
        );
    }

    /// A home whose identity (made by its first account) is wrapped to
    /// the fake plugin's key in slot `slot-1` with `store rekey
    /// --wrap-with`, the plugin identity saved where outreach looks by
    /// default (identity-plugin.txt beside the identity).
    fn wrapped_home() -> Wrapped {
        let x = support::fake_x();
        let mut home = Home::new();
        home.endpoint("x", "api", &x.url());
        let log = home.path().join("plugin-runs.log");
        home.env.push(("PATH".into(), path_with_plugin()));
        home.env
            .push(("AGE_PLUGIN_FAKE_LOG".into(), log.display().to_string()));
        let (text, recipient) = generate("slot-1");
        let pi = home.path().join("identity-plugin.txt");
        std::fs::write(&pi, text).unwrap();
        std::fs::set_permissions(&pi, std::fs::Permissions::from_mode(0o600)).unwrap();
        let w = Wrapped {
            home,
            x,
            log,
            recipient,
        };
        let (_, runs) = w.ok(&["accounts", "add", "x"], Some(X_TOKEN));
        assert_eq!(runs, (0, 0), "a plain identity needs no plugin");
        let plain = std::fs::read_to_string(w.identity()).unwrap();
        assert!(plain.contains("AGE-SECRET-KEY-"));

        let (r, runs) = w.ok(&["store", "rekey", "--wrap-with", &w.recipient], None);
        assert!(r.stdout.contains(&w.recipient), "{}", r.stdout);
        assert!(r.stdout.contains("identity-plugin.txt"), "{}", r.stdout);
        // The probe is unwrapped once; the new key is wrapped twice (with
        // the key it replaces while records move, then alone).
        assert_eq!(runs.0, 1, "{r:?}", r = r.all());
        let raw = std::fs::read(w.identity()).unwrap();
        assert!(raw.starts_with(b"age-encryption.org/v1\n-> fake "));
        assert!(
            !String::from_utf8_lossy(&raw).contains("AGE-SECRET-KEY-"),
            "the wrapped file holds no key in plain"
        );
        assert_eq!(
            std::fs::metadata(w.identity())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        w
    }

    /// `age -d -i IDENTITIES FILE` with the fake plugin on PATH: the
    /// plaintext, or `None` when the `age` CLI is not installed (a failure
    /// when OUTREACH_REQUIRE_AGE_CLI is set).
    fn age_decrypt(identities: &Path, file: &Path) -> Option<Vec<u8>> {
        if !have_age_cli() {
            return None;
        }
        let out = Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(identities)
            .arg(file)
            .env("PATH", path_with_plugin())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "age -d -i {} {}: {}",
            identities.display(),
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(out.stdout)
    }

    /// The unwrapped identity text (`None` without the `age` CLI).
    fn unwrap_identity(w: &Wrapped) -> Option<String> {
        age_decrypt(&w.plugin_identities(), &w.identity()).map(|p| String::from_utf8(p).unwrap())
    }

    /// Wrapped once, every later process unwraps it with one run of the
    /// plugin — not one per record — and works as before: accounts,
    /// status, adding accounts, publishing to a fake, the daemon.
    #[test]
    fn a_wrapped_identity_is_unwrapped_once_per_process() {
        let w = wrapped_home();
        if let Some(text) = unwrap_identity(&w) {
            assert!(
                text.contains(&format!("# outreach-wrapped-to: {}", w.recipient)),
                "{text}"
            );
            // The records moved to the new key, which only the wrapped
            // file holds.
            let key = keys_in(&text);
            assert_eq!(key.len(), 1);
            let rec = std::fs::read(w.home.path().join("store/x/default.age")).unwrap();
            let ids: Vec<&dyn age::Identity> = key.iter().map(|k| k as _).collect();
            assert!(open_with(&rec, &ids).is_some());
        }

        for account in ["two", "three"] {
            let (_, runs) = w.ok(
                &["accounts", "add", "x", "--account", account],
                Some(X_TOKEN),
            );
            assert_eq!(runs, (1, 0), "accounts add {account}");
        }
        let (r, runs) = w.ok(&["accounts", "--json"], None);
        assert_eq!(r.stdout.matches("\"x/").count(), 3, "{}", r.stdout);
        assert_eq!(runs, (1, 0), "three records, one unwrap");
        let (r, runs) = w.ok(&["status"], None);
        assert!(r.stdout.contains("x/three"), "{}", r.stdout);
        assert_eq!(runs, (1, 0), "status");

        let post = w.home.post(
            "hello.toml",
            "text = \"hello from a wrapped key\"\nto = [\"x\", \"x/two\", \"x/three\"]\n",
        );
        let (_, runs) = w.ok(&["publish", post.to_str().unwrap()], None);
        assert_eq!(runs, (1, 0), "a publish to three accounts");
        assert_eq!(w.x.posts().len(), 3);

        // The daemon: one unwrap at start, then posts and reads without it.
        let mut w = w;
        w.home.extra_config.push_str(
            "\n[daemon]\nlisten = \"127.0.0.1:0\"\ndebounce_ms = 50\ndue_check_secs = 1\ngrace_secs = 20\n",
        );
        let posts = w.home.path().join("posts");
        std::fs::create_dir_all(&posts).unwrap();
        w.clear_runs();
        let d = start_daemon(&w.home);
        std::fs::write(
            posts.join("daemon.toml"),
            "text = \"from the daemon\"\nto = [\"x\", \"x/two\"]\n",
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while w.x.posts().len() < 5 {
            assert!(
                Instant::now() < deadline,
                "the daemon did not publish:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = d.stop();
        assert!(!log.contains("AGE-SECRET-KEY-"), "{log}");
        assert_eq!(w.runs(), (1, 0), "the daemon:\n{log}");
    }

    /// A daemon keeps working across a `store rekey` that another process
    /// runs on a wrapped identity: it reads the re-wrapped file once more
    /// (one more plugin run) and goes on publishing with the new key.
    #[test]
    fn a_running_daemon_follows_a_rekey_of_its_wrapped_identity() {
        let mut w = wrapped_home();
        w.home.extra_config.push_str(
            "\n[daemon]\nlisten = \"127.0.0.1:0\"\ndebounce_ms = 50\ndue_check_secs = 1\ngrace_secs = 20\n",
        );
        let posts = w.home.path().join("posts");
        std::fs::create_dir_all(&posts).unwrap();
        w.clear_runs();
        let d = start_daemon(&w.home);
        let (_, runs) = w.ok(&["store", "rekey"], None);
        assert_eq!(runs.0, 1, "the rekey unwraps once");
        std::fs::write(
            posts.join("after.toml"),
            "text = \"after the rekey\"\nto = [\"x\"]\n",
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while w.x.posts().is_empty() {
            assert!(
                Instant::now() < deadline,
                "the daemon did not publish after the rekey:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = d.stop();
        assert!(!log.contains("cannot be read again"), "{log}");
        assert!(!log.contains("AGE-SECRET-KEY-"), "{log}");
        // The rekey's one unwrap, then the daemon's one of the new file
        // (the log was cleared for the rekey: the daemon's start-up unwrap
        // is not counted).
        assert_eq!(w.runs().0, 2, "{log}");
    }

    /// `backup --include-identity` of a wrapped identity takes its age
    /// plugin identities along, and `restore` puts both back: the restored
    /// home opens its records with the plugin, as before.
    #[test]
    fn a_backup_with_a_wrapped_identity_carries_its_plugin_identities() {
        let mut w = wrapped_home();
        w.home.env.push((
            "OUTREACH_BACKUP_PASSPHRASE".into(),
            "backup-PLANTED-pass-9f1".into(),
        ));
        let file = w.home.path().join("wrapped.tar.zst.age");
        let (r, _) = w.ok(
            &["backup", file.to_str().unwrap(), "--include-identity"],
            None,
        );
        assert!(r.stdout.contains("age plugin identities"), "{}", r.stdout);
        let dest = w.home.path().join("restored");
        let (r, _) = w.ok(
            &[
                "restore",
                file.to_str().unwrap(),
                "--to",
                dest.to_str().unwrap(),
            ],
            None,
        );
        assert!(r.stdout.contains("identity-plugin.txt"), "{}", r.stdout);
        assert_eq!(
            std::fs::read(dest.join("identity-plugin.txt")).unwrap(),
            std::fs::read(w.plugin_identities()).unwrap()
        );
        assert_eq!(
            std::fs::read(dest.join("identity.txt")).unwrap(),
            std::fs::read(w.identity()).unwrap()
        );
        assert_eq!(
            std::fs::metadata(dest.join("identity-plugin.txt"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        // A home on the restored files reads its accounts through the plugin.
        let mut restored = Home::new();
        restored.env = w.home.env.clone();
        restored.paths_extra = format!(
            "identity_plugin = {:?}\n",
            dest.join("identity-plugin.txt").display().to_string()
        );
        std::fs::remove_dir_all(restored.path().join("plugins")).unwrap();
        std::os::unix::fs::symlink(w.home.plugins_dir(), restored.path().join("plugins")).unwrap();
        std::fs::rename(dest.join("store"), restored.path().join("store")).unwrap();
        std::fs::rename(
            dest.join("identity.txt"),
            restored.path().join("identity.txt"),
        )
        .unwrap();
        let r = restored.run(&["accounts", "--json"], None);
        assert_eq!(r.code, 0, "{}", r.all());
        assert!(r.stdout.contains("\"x/default\""), "{}", r.stdout);
    }

    /// A rekey of a wrapped identity keeps it wrapped (the new key is
    /// never on disk in plain) with one unwrap; `--add-recipient` takes a
    /// plugin's recipient, and then the records open with the plugin
    /// identity alone — with the real `age` CLI when it is installed.
    #[test]
    fn rekey_and_add_recipient_work_with_plugin_keys() {
        let w = wrapped_home();
        let before = unwrap_identity(&w).map(|t| keys_in(&t));
        let (_, runs) = w.ok(&["store", "rekey"], None);
        assert_eq!(runs.0, 1, "a rekey unwraps once");
        let raw = std::fs::read(w.identity()).unwrap();
        assert!(raw.starts_with(b"age-encryption.org/v1\n-> fake "));
        assert!(!String::from_utf8_lossy(&raw).contains("AGE-SECRET-KEY-"));
        if let (Some(before), Some(after)) = (before, unwrap_identity(&w).map(|t| keys_in(&t))) {
            assert_eq!(after.len(), 1);
            assert_ne!(after[0].to_public(), before[0].to_public());
        }
        let (r, runs) = w.ok(&["accounts", "--json"], None);
        assert!(r.stdout.contains("x/default"), "{}", r.stdout);
        assert_eq!(runs, (1, 0));

        // Records also encrypted to a second fake key (say, a spare).
        let (spare_text, spare) = generate("spare-2");
        let spare_file = w.home.path().join("spare-identity.txt");
        std::fs::write(&spare_file, spare_text).unwrap();
        let (r, runs) = w.ok(&["store", "rekey", "--add-recipient", &spare], None);
        assert!(r.stdout.contains(&spare), "{}", r.stdout);
        assert_eq!(runs.0, 1, "one unwrap; {runs:?}");
        assert!(runs.1 >= 1, "the record was wrapped to the spare");
        let rec = w.home.path().join("store/x/default.age");
        let head = std::fs::read(&rec).unwrap();
        assert!(
            String::from_utf8_lossy(&head).contains("\n-> fake "),
            "the record has a stanza for the spare"
        );
        // The spare's plugin identity alone opens the record.
        if let Some(plain) = age_decrypt(&spare_file, &rec) {
            let v: serde_json::Value = serde_json::from_slice(&plain).unwrap();
            assert_eq!(v["access_token"], X_TOKEN);
        }
        // Writes run the recipient plugin; reads still never do.
        let (_, runs) = w.ok(
            &["accounts", "add", "x", "--account", "four"],
            Some(X_TOKEN),
        );
        assert_eq!(
            runs,
            (1, 1),
            "one unwrap at start, one wrap of the new record"
        );
        let (_, runs) = w.ok(&["accounts"], None);
        assert_eq!(runs, (1, 0));
    }

    /// Every file of the home, with its bytes.
    fn snapshot(home: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                if e.file_type().unwrap().is_dir() {
                    if name != "cache" && name != "plugins" {
                        walk(&p, out);
                    }
                } else if !name.ends_with(".log") && !name.ends_with(".lock") {
                    out.push((p.clone(), std::fs::read(&p).unwrap()));
                }
            }
        }
        let mut out = Vec::new();
        walk(home, &mut out);
        out.sort();
        out
    }

    fn refused(w: &Wrapped, args: &[&str], env: &[(&str, &str)], expect: &[&str]) -> Run {
        let before = snapshot(w.home.path());
        let mut cmd = w.home.command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.stdin(std::process::Stdio::null()).output().unwrap();
        let r = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        r.assert_no_secrets();
        assert_no_key(&r);
        assert_ne!(r.code, 0, "{args:?} should fail:\n{}", r.all());
        let error = r
            .stderr
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or_else(|| panic!("{args:?}: no error line:\n{}", r.all()));
        for e in expect {
            assert!(error.contains(e), "{args:?}: `{e}` not in: {error}");
        }
        assert!(
            snapshot(w.home.path()) == before,
            "{args:?} changed files:\n{}",
            r.all()
        );
        r
    }

    /// A missing plugin binary, a plugin that refuses (a touch timed out),
    /// another device plugged in, a missing plugin identity file and a
    /// wrap to a key nothing here opens: each a clear error naming what
    /// to do, and nothing changed.
    #[test]
    fn plugin_failures_are_clear_and_change_nothing() {
        let w = wrapped_home();
        let plain_path = std::env::var("PATH").unwrap_or_default();
        refused(
            &w,
            &["accounts"],
            &[("PATH", &plain_path)],
            &[
                "is wrapped to a key the age plugin `fake` holds",
                "`age-plugin-fake` is not on PATH",
                "install",
            ],
        );
        refused(
            &w,
            &["status"],
            &[("AGE_PLUGIN_FAKE_REFUSE", "touch timed out")],
            &[
                "the age plugin refused ('age-plugin-fake' couldn't use an identity: touch timed out)",
                "nothing was changed",
            ],
        );
        refused(
            &w,
            &["accounts"],
            &[("AGE_PLUGIN_FAKE_DEVICE", "another-token")],
            &[
                "cannot be unwrapped with the plugin identities",
                "identity-plugin.txt",
            ],
        );
        // A wrap to a key whose identity is not saved: the probe fails.
        let (_, other) = generate("slot-9");
        refused(
            &w,
            &["store", "rekey", "--wrap-with", &other],
            &[],
            &[
                "was not wrapped",
                "cannot be unwrapped",
                "nothing was changed",
            ],
        );
        refused(
            &w,
            &["store", "rekey", "--wrap-with", "age1notarecipient"],
            &[],
            &["not an age recipient", "nothing was changed"],
        );

        // Without the plugin identities, the wrapped file says where to
        // put them.
        let kept = std::fs::read(w.plugin_identities()).unwrap();
        std::fs::remove_file(w.plugin_identities()).unwrap();
        refused(
            &w,
            &["accounts"],
            &[],
            &[
                "wrapped to an age plugin's key",
                "identity-plugin.txt",
                "identity_plugin",
            ],
        );
        std::fs::write(w.plugin_identities(), &kept).unwrap();
        // A plugin identity put in the identity file itself is explained.
        let stray = w.home.path().join("stray-identity.txt");
        std::fs::write(&stray, &kept).unwrap();
        let mut cfg_home = Home::new();
        cfg_home.env = w.home.env.clone();
        std::fs::copy(&stray, cfg_home.path().join("identity.txt")).unwrap();
        let r = cfg_home.run(&["accounts"], None);
        assert_ne!(r.code, 0);
        assert!(
            r.all().contains("holds an age plugin identity") && r.all().contains("--wrap-with"),
            "{}",
            r.all()
        );
        // And after all that, the wrapped home works as before.
        let (_, runs) = w.ok(&["accounts"], None);
        assert_eq!(runs, (1, 0));
    }

    /// Wrapping needs the plugin identities first: without them nothing
    /// is wrapped (a store nobody could open), and the plain identity
    /// stays as it was. A plugin recipient added while its plugin is
    /// missing changes nothing either.
    #[test]
    fn plugin_keys_missing_their_parts_change_nothing() {
        let x = support::fake_x();
        let mut home = Home::new();
        home.endpoint("x", "api", &x.url());
        home.env.push(("PATH".into(), path_with_plugin()));
        let r = home.run(&["accounts", "add", "x"], Some(X_TOKEN));
        assert_eq!(r.code, 0, "{}", r.all());
        let (_, recipient) = generate("slot-1");
        let w = Wrapped {
            home,
            x,
            log: PathBuf::from("/nonexistent"),
            recipient,
        };
        refused(
            &w,
            &["store", "rekey", "--wrap-with", &w.recipient],
            &[],
            &["was not wrapped", "identity-plugin.txt", "does not exist"],
        );
        let text = std::fs::read_to_string(w.identity()).unwrap();
        assert!(text.contains("AGE-SECRET-KEY-"));
        let plain_path = std::env::var("PATH").unwrap_or_default();
        refused(
            &w,
            &["store", "rekey", "--add-recipient", &w.recipient],
            &[("PATH", &plain_path)],
            &[
                "cannot encrypt to the recipient age1fake1",
                "`age-plugin-fake` is not on PATH",
                "nothing was changed",
            ],
        );
        assert!(!w.home.path().join("store/.recipients").exists());
    }
}

/// The PostgreSQL backend (`[store] backend = "postgres"`) through the
/// real binary, on a throwaway cluster (tests/support/pg.rs): a loud skip
/// without PostgreSQL, a failure with OUTREACH_REQUIRE_POSTGRES=1.
mod postgres {
    use super::*;
    use support::daemon::start_daemon;
    use support::oauth::{CLIENT_ID, CLIENT_SECRET};
    use support::{Fake, Home, X_TOKEN, fake_x, pg};

    const URL_VAR: &str = "OUTREACH_TEST_DATABASE_URL";
    const SECRET_VAR: &str = "OUTREACH_TEST_CLIENT_SECRET";
    /// The refresh token the imported account starts with.
    const SEED_REFRESH: &str = "x-import-refresh-PLANTED-3";

    /// A home on the PostgreSQL backend, its URL in `URL_VAR` (`url`, or
    /// none when `None`), pointed at the X fake if there is one.
    fn pg_home(url: Option<String>, x: Option<&Fake>) -> Home {
        let mut home = Home::new();
        // One compile cache for the binary's homes (entries are keyed by
        // content and written atomically).
        if let Some(c) = pg::cluster() {
            std::os::unix::fs::symlink(c.shared_dir("plugin-cache"), home.path().join("cache"))
                .unwrap();
        }
        home.extra_config.push_str(&format!(
            "\n[store]\nbackend = \"postgres\"\nurl_env = \"{URL_VAR}\"\nconnect_retry_secs = 2\n"
        ));
        if let Some(url) = url {
            home.env.push((URL_VAR.into(), url));
        }
        if let Some(x) = x {
            home.endpoint("x", "api", &x.url());
            home.endpoint("x", "authorize", &format!("{}/i/oauth2/authorize", x.url()));
            home.endpoint("x", "token", &format!("{}/2/oauth2/token", x.url()));
            home.endpoint("x", "revoke", &format!("{}/2/oauth2/revoke", x.url()));
            home.extra_config.push_str(&format!(
                "\n[platforms.x]\nclient_id = \"{CLIENT_ID}\"\nclient_secret_env = \"{SECRET_VAR}\"\n"
            ));
            home.env.push((SECRET_VAR.into(), CLIENT_SECRET.into()));
        }
        home
    }

    /// `hex` (psql's `encode(…, 'hex')`) as bytes.
    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    }

    /// Every value in every outreach table, as psql shows it, with each
    /// `bytea` also decoded: what someone with the database (and not the
    /// identity) can read.
    fn everything_in(db: &pg::Db) -> Vec<u8> {
        let mut all = Vec::new();
        for table in [
            "outreach_accounts",
            "outreach_aux",
            "outreach_answers",
            "outreach_recipients",
        ] {
            all.extend_from_slice(db.sql(&format!("SELECT t::text FROM {table} t")).as_bytes());
            if table != "outreach_recipients" {
                for hex in db
                    .sql(&format!("SELECT encode(sealed, 'hex') FROM {table}"))
                    .lines()
                {
                    all.extend(unhex(hex.trim()));
                }
            }
        }
        all
    }

    fn contains(hay: &[u8], needle: &str) -> bool {
        hay.windows(needle.len()).any(|w| w == needle.as_bytes())
    }

    /// Import x/default with a refresh token the X fake accepts.
    fn import_x(home: &Home, x: &Fake) {
        let seed = home.path().join(".tokens.json");
        std::fs::write(
            &seed,
            format!(
                r#"{{"twitter": {{"accessToken": "x-import-PLANTED-2", "refreshToken": "{SEED_REFRESH}", "expiresIn": 7200,
                  "scope": "tweet.read tweet.write offline.access", "profile": {{"id": "42", "username": "ada"}},
                  "createdAt": "2026-11-25T10:00:00Z", "lastRefreshed": "2026-11-26T06:00:00Z"}}}}"#
            ),
        )
        .unwrap();
        let r = home.run(&["import", seed.to_str().unwrap()], None);
        assert_eq!(r.code, 0, "{}", r.all());
        x.state
            .oauth
            .lock()
            .unwrap()
            .refresh
            .insert(SEED_REFRESH.into());
    }

    #[test]
    fn accounts_are_rows_sealed_for_the_age_cli_and_never_in_plain() {
        let Some(db) = pg::database() else { return };
        let x = fake_x();
        let home = pg_home(Some(db.url()), Some(&x));
        let r = home.run(&["accounts", "add", "x"], Some(X_TOKEN));
        assert_eq!(r.code, 0, "{}", r.all());
        assert!(r.stdout.contains("added x/default"), "{}", r.stdout);
        assert!(r.stdout.contains(URL_VAR), "{}", r.stdout);
        // Nothing went to the files backend's folder.
        assert!(!home.path().join("store/x/default.age").exists());

        let r = home.run(&["accounts", "--json"], None);
        assert_eq!(r.code, 0, "{}", r.all());
        let list: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(list[0]["id"], "x/default", "{list}");

        // The plain columns, for scheduling without decrypting.
        let row = db.sql(
            "SELECT platform, account, state, updated_at > now() - interval '1 minute' FROM outreach_accounts",
        );
        assert_eq!(row, "x|default|healthy|t");
        // No token anywhere in the database but inside age's encryption.
        let all = everything_in(&db);
        assert!(
            !contains(&all, X_TOKEN),
            "the token is in the database in plain"
        );
        assert!(!contains(&all, "PLANTED"));

        // The row's sealed bytes are an age file the identity opens.
        let sealed = unhex(&db.sql(
            "SELECT encode(sealed, 'hex') FROM outreach_accounts WHERE platform = 'x' AND account = 'default'",
        ));
        assert!(sealed.starts_with(b"age-encryption.org/v1\n"));
        let copied = home.path().join("copied-out.age");
        std::fs::write(&copied, &sealed).unwrap();
        let plain = if have_age_cli() {
            let out = std::process::Command::new("age")
                .arg("-d")
                .arg("-i")
                .arg(home.path().join("identity.txt"))
                .arg(&copied)
                .output()
                .unwrap();
            assert!(out.status.success(), "age -d failed");
            out.stdout
        } else {
            let text = identity_text(&home.path().join("identity.txt"), None);
            let keys = keys_in(&text);
            let ids: Vec<&dyn age::Identity> =
                keys.iter().map(|k| k as &dyn age::Identity).collect();
            open_with(&sealed, &ids).expect("the identity opens the row")
        };
        let v: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        assert!(v["access_token"] == X_TOKEN, "the row holds another record");
        assert_eq!(v["id"]["platform"], "x");

        let r = home.run(&["accounts", "remove", "x/default"], None);
        assert_eq!(r.code, 0, "{}", r.all());
        assert_eq!(db.sql("SELECT count(*) FROM outreach_accounts"), "0");
        let r = home.run(&["accounts", "remove", "x/default"], None);
        assert_ne!(r.code, 0, "{}", r.all());
        assert!(
            r.all().contains("there is no account x/default"),
            "{}",
            r.all()
        );
    }

    /// Two processes refreshing one account with a rotating refresh
    /// token: the lease lets one at a time, so the second uses the token
    /// the first stored and none is spent twice. A holder killed mid-
    /// exchange loses its lease with its connection; the next process
    /// takes it at once, waits for the exchange the killed one's escrow
    /// helper finishes, and applies the answer the helper sealed in the
    /// database.
    #[test]
    fn one_refresher_per_account_across_processes_and_a_killed_holder_is_taken_over() {
        let Some(db) = pg::database() else { return };
        let x = fake_x();
        let home = pg_home(Some(db.url()), Some(&x));
        import_x(&home, &x);

        *x.state.delay.lock().unwrap() = Duration::from_millis(800);
        let spawn = || {
            home.command(&["refresh", "x"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        for child in [a, b] {
            let out = child.wait_with_output().unwrap();
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!all.contains("PLANTED"), "a secret was printed:\n{all}");
            assert!(out.status.success(), "{all}");
        }
        {
            let o = x.state.oauth.lock().unwrap();
            assert_eq!(o.reused, 0, "a rotated refresh token was spent twice");
            assert_eq!(o.refresh_calls, 2);
        }
        *x.state.delay.lock().unwrap() = Duration::ZERO;

        // Killed while its exchange is on the way back.
        // Within the HTTP timeout (2 s in the test config): the answer
        // arrives, at the escrow helper only.
        *x.state.answer_delay.lock().unwrap() = Duration::from_millis(1200);
        let mut holder = spawn();
        let deadline = Instant::now() + Duration::from_secs(20);
        while x.state.oauth.lock().unwrap().refresh_calls < 3 {
            assert!(
                Instant::now() < deadline,
                "the holder never sent its refresh"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        holder.kill().unwrap();
        let _ = holder.wait();
        let started = Instant::now();
        *x.state.answer_delay.lock().unwrap() = Duration::ZERO;
        let r = home.run(&["refresh", "x"], None);
        assert_eq!(r.code, 0, "{}", r.all());
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the killed holder's lease was not taken over promptly"
        );
        let o = x.state.oauth.lock().unwrap();
        assert_eq!(o.reused, 0, "a rotated refresh token was spent twice");
        drop(o);
        // The answer was applied and cleared; the account is healthy.
        assert_eq!(db.sql("SELECT count(*) FROM outreach_answers"), "0");
        assert_eq!(db.sql("SELECT state FROM outreach_accounts"), "healthy");
        let r = home.run(&["status", "--json"], None);
        assert_eq!(r.code, 0, "{}", r.all());
        assert!(r.stdout.contains("\"healthy\""), "{}", r.stdout);
        assert!(!contains(&everything_in(&db), "PLANTED"));
    }

    /// Each way of failing to reach the database is one clear error that
    /// names the environment variable and never prints the password.
    #[test]
    fn connection_failures_are_clear_and_never_print_the_password() {
        let Some(db) = pg::database() else { return };
        let check = |url: Option<String>, expect: &[&str]| {
            let home = pg_home(url, None);
            let started = Instant::now();
            let r = home.run(&["accounts"], None);
            assert_ne!(r.code, 0, "{}", r.all());
            for e in expect {
                assert!(r.stderr.contains(e), "expected {e:?} in:\n{}", r.stderr);
            }
            // Bounded: the retry window (2 s here) and a diagnosis.
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "expecting {expect:?} took {:?}",
                started.elapsed()
            );
            assert!(!r.all().contains(pg::PASSWORD));
        };
        check(None, &[URL_VAR, "not set"]);
        check(
            Some("mysql://u:wrong-PLANTED-pw@127.0.0.1/x".into()),
            &[URL_VAR, "postgres://"],
        );
        check(
            Some("not a url PLANTED".into()),
            &[URL_VAR, "does not hold a usable PostgreSQL URL"],
        );
        check(
            Some(db.url_with(pg::USER, "wrong-PLANTED-password")),
            &[
                URL_VAR,
                "refused the login",
                "password authentication failed",
            ],
        );
        // Nothing listens on port 1: retried for store.connect_retry_secs.
        check(
            Some(format!(
                "postgres://{}:{}@127.0.0.1:1/x",
                pg::USER,
                pg::PASSWORD
            )),
            &[URL_VAR, "127.0.0.1:1", "within 2 s", "Connection refused"],
        );
        check(
            Some(format!(
                "postgres://{}:{}@127.0.0.1:{}/no_such_db",
                pg::USER,
                pg::PASSWORD,
                db.cluster.port
            )),
            &["no such database", "no_such_db"],
        );
    }

    /// A database a newer outreach has migrated is refused, and nothing
    /// in it changes.
    #[test]
    fn a_newer_schema_is_refused_and_left_untouched() {
        let Some(db) = pg::database() else { return };
        let x = fake_x();
        let home = pg_home(Some(db.url()), Some(&x));
        let r = home.run(&["accounts", "add", "x"], Some(X_TOKEN));
        assert_eq!(r.code, 0, "{}", r.all());
        db.sql(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (9999, 'from the future', true, '\\x00', 0)",
        );
        let before = db.sql("SELECT encode(sealed, 'hex'), updated_at FROM outreach_accounts");
        let r = home.run(&["accounts"], None);
        assert_ne!(r.code, 0, "{}", r.all());
        assert!(r.stderr.contains("schema version 9999"), "{}", r.stderr);
        assert!(r.stderr.contains("newer"), "{}", r.stderr);
        assert!(r.stderr.contains("nothing was changed"), "{}", r.stderr);
        assert_eq!(
            db.sql("SELECT encode(sealed, 'hex'), updated_at FROM outreach_accounts"),
            before
        );
    }

    /// The URL is never read from the config file (it holds a password),
    /// and the error does not quote it.
    #[test]
    fn a_url_in_the_config_file_is_refused_without_quoting_it() {
        let mut home = Home::new();
        home.extra_config.push_str(&format!(
            "\n[store]\nbackend = \"postgres\"\nurl = \"postgres://u:{}@127.0.0.1/x\"\n",
            pg::PASSWORD
        ));
        let r = home.run(&["accounts"], None);
        assert_ne!(r.code, 0, "{}", r.all());
        assert!(r.stderr.contains("url_env"), "{}", r.stderr);
    }

    /// Without its identity file, a database that holds records is an error
    /// that creates no new key and changes nothing.
    #[test]
    fn a_missing_identity_is_an_error_when_the_database_holds_records() {
        let Some(db) = pg::database() else { return };
        let x = fake_x();
        let home = pg_home(Some(db.url()), Some(&x));
        let r = home.run(&["accounts", "add", "x"], Some(X_TOKEN));
        assert_eq!(r.code, 0, "{}", r.all());
        std::fs::rename(
            home.path().join("identity.txt"),
            home.path().join("identity.txt.moved"),
        )
        .unwrap();
        let r = home.run(&["accounts"], None);
        assert_ne!(r.code, 0, "{}", r.all());
        assert!(r.stderr.contains("identity file"), "{}", r.stderr);
        assert!(r.stderr.contains("1 encrypted row"), "{}", r.stderr);
        assert!(!home.path().join("identity.txt").exists());
        assert_eq!(db.sql("SELECT count(*) FROM outreach_accounts"), "1");
    }

    const DAEMON_CONFIG: &str = "\n[daemon]\nlisten = \"127.0.0.1:0\"\ndebounce_ms = 50\ndue_check_secs = 1\ngrace_secs = 20\n";

    /// Requests to post on X whose text contains `text`.
    fn tweets_sent(x: &Fake, text: &str) -> usize {
        x.seen()
            .iter()
            .filter(|s| s.method == "POST" && s.path == "/2/tweets" && s.body.contains(text))
            .count()
    }

    fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !ok() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn in_secs(secs: i64) -> String {
        (chrono::Utc::now() + chrono::Duration::seconds(secs)).to_rfc3339()
    }

    /// Three daemons on one database share the journal: a scheduled
    /// fan-out goes out once per target whichever daemon takes it; a daemon
    /// killed with a post in flight has that delivery settled `unknown` by
    /// another (never sent again), and comes back to find it so; an account
    /// another process adds is scheduled by a running daemon.
    #[test]
    fn daemons_sharing_a_database_send_each_delivery_once_and_settle_a_killed_ones_claims() {
        let Some(db) = pg::database() else { return };
        let x = fake_x();
        let mut a = pg_home(Some(db.url()), Some(&x));
        for account in ["one", "two", "three"] {
            let r = a.run(
                &["accounts", "add", "x", "--account", account],
                Some(X_TOKEN),
            );
            assert_eq!(r.code, 0, "{}", r.all());
        }
        let mut b = pg_home(Some(db.url()), Some(&x));
        let mut c = pg_home(Some(db.url()), Some(&x));
        for h in [&b, &c] {
            std::fs::copy(a.path().join("identity.txt"), h.path().join("identity.txt")).unwrap();
        }
        for h in [&mut a, &mut b, &mut c] {
            h.extra_config.push_str(DAEMON_CONFIG);
        }
        let homes = [&a, &b, &c];
        let mut daemons = homes.map(|h| Some(start_daemon(h)));
        // The second daemon sees the first's accounts.
        let r = b.run(&["accounts", "--json"], None);
        assert_eq!(r.stdout.matches("\"x/").count(), 3, "{}", r.stdout);

        // A scheduled fan-out, queued from the first home's CLI.
        let fan = a.post(
            "fan.toml",
            &format!(
                "id = \"fan\"\ntext = \"fan-out once\"\nto = [\"x/one\", \"x/two\", \"x/three\"]\nschedule = \"{}\"\n",
                in_secs(2)
            ),
        );
        let r = a.run(&["publish", fan.to_str().unwrap()], None);
        assert_eq!(r.code, 0, "{}", r.all());
        wait_until("the fan-out", Duration::from_secs(30), || {
            tweets_sent(&x, "fan-out once") >= 3
        });
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(tweets_sent(&x, "fan-out once"), 3, "a delivery went twice");
        assert_eq!(
            db.sql("SELECT count(*) FROM outreach_deliveries WHERE post = 'fan' AND state = 'published'"),
            "3"
        );

        // Killed mid-send, twice: whichever daemon claimed the post.
        *x.state.delay.lock().unwrap() = Duration::from_millis(1500);
        for round in 0..2 {
            let id = format!("kill{round}");
            let text = format!("killed in flight {round}");
            let post = a.post(
                &format!("{id}.toml"),
                &format!(
                    "id = \"{id}\"\ntext = \"{text}\"\nto = [\"x/one\"]\nschedule = \"{}\"\n",
                    in_secs(1)
                ),
            );
            let r = a.run(&["publish", post.to_str().unwrap()], None);
            assert_eq!(r.code, 0, "{}", r.all());
            wait_until("the post to reach X", Duration::from_secs(30), || {
                tweets_sent(&x, &text) == 1
            });
            let owner = db.sql(&format!(
                "SELECT owner FROM outreach_deliveries WHERE post = '{id}' AND state = 'sending'"
            ));
            let pid: u32 = owner
                .split(':')
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("no sending claim with an owner: {owner:?}"));
            let which = daemons
                .iter()
                .position(|d| d.as_ref().is_some_and(|d| d.child.id() == pid))
                .expect("the claim is one of the daemons'");
            let mut killed = daemons[which].take().unwrap();
            killed.child.kill().unwrap();
            let _ = killed.child.wait();
            // Another daemon settles the claim as unknown.
            wait_until(
                "another daemon to settle the claim",
                Duration::from_secs(20),
                || {
                    db.sql(&format!(
                        "SELECT state FROM outreach_deliveries WHERE post = '{id}'"
                    )) == "unknown"
                },
            );
            daemons[which] = Some(start_daemon(homes[which]));
            std::thread::sleep(Duration::from_secs(3));
            assert_eq!(tweets_sent(&x, &text), 1, "round {round}: sent again");
            assert_eq!(
                db.sql(&format!(
                    "SELECT state FROM outreach_deliveries WHERE post = '{id}'"
                )),
                "unknown"
            );
        }
        *x.state.delay.lock().unwrap() = Duration::ZERO;
        let r = b.run(&["posts", "--json"], None);
        assert_eq!(r.code, 0, "{}", r.all());
        assert!(r.stdout.contains("\"unknown\""), "{}", r.stdout);
        // An account another process adds is scheduled by a running
        // daemon: with only the second daemon left, it refreshes the
        // account the first home's CLI imported (its token long expired).
        let [first, second, third] = daemons;
        first.unwrap().stop();
        third.unwrap().stop();
        import_x(&a, &x);
        wait_until(
            "the other daemon to refresh an account it did not add",
            Duration::from_secs(30),
            || x.state.oauth.lock().unwrap().refresh_calls >= 1,
        );
        second.unwrap().stop();
        assert_eq!(x.state.oauth.lock().unwrap().reused, 0);
        assert_eq!(
            db.sql("SELECT count(*) FROM outreach_accounts WHERE state = 'healthy'"),
            "4"
        );
    }

    /// `store migrate` copies the accounts and the journal from files to
    /// PostgreSQL and back, checks the copy, leaves the source as it was,
    /// and can run again.
    #[test]
    fn store_migrate_copies_accounts_and_journal_both_ways() {
        let Some(db) = pg::database() else { return };
        let x = fake_x();
        let mut home = pg_home(Some(db.url()), Some(&x));
        // Start on files: the same home without [store].
        let pg_config = home.extra_config.clone();
        home.extra_config = pg_config.replace(
            "\n[store]\nbackend = \"postgres\"\n",
            "\n[store]\nbackend = \"files\"\n",
        );
        for account in ["one", "two"] {
            let r = home.run(
                &["accounts", "add", "x", "--account", account],
                Some(X_TOKEN),
            );
            assert_eq!(r.code, 0, "{}", r.all());
        }
        let post = home.post(
            "m.toml",
            "id = \"moved\"\ntext = \"before the move\"\nto = [\"x/one\"]\n",
        );
        let r = home.run(&["publish", post.to_str().unwrap()], None);
        assert_eq!(r.code, 0, "{}", r.all());
        let store_before = snapshot(&home.path().join("store"));

        for _ in 0..2 {
            let r = home.run(&["store", "migrate", "--to", "postgres"], None);
            assert_eq!(r.code, 0, "{}", r.all());
            assert!(r.stdout.contains("copied 2 accounts"), "{}", r.stdout);
            assert!(r.stdout.contains("1 post,"), "{}", r.stdout);
            assert!(r.stdout.contains("backend = \"postgres\""), "{}", r.stdout);
        }
        assert_eq!(
            snapshot(&home.path().join("store")),
            store_before,
            "the source changed"
        );
        assert_eq!(db.sql("SELECT count(*) FROM outreach_accounts"), "2");
        assert!(!contains(&everything_in(&db), X_TOKEN));

        // On PostgreSQL: the accounts, and the post already published.
        home.extra_config = pg_config.clone();
        let r = home.run(&["accounts", "--json"], None);
        assert_eq!(r.stdout.matches("\"x/").count(), 2, "{}", r.stdout);
        let r = home.run(&["posts", "show", "moved", "--json"], None);
        assert_eq!(r.code, 0, "{}", r.all());
        assert!(r.stdout.contains("\"published\""), "{}", r.stdout);
        let r = home.run(&["publish", post.to_str().unwrap()], None);
        assert_eq!(r.code, 0, "{}", r.all());
        assert_eq!(
            tweets_sent(&x, "before the move"),
            1,
            "published again after the move"
        );

        // Back to files, with what changed on PostgreSQL.
        let r = home.run(
            &["accounts", "add", "x", "--account", "three"],
            Some(X_TOKEN),
        );
        assert_eq!(r.code, 0, "{}", r.all());
        let r = home.run(&["store", "migrate", "--to", "files", "--json"], None);
        assert_eq!(r.code, 0, "{}", r.all());
        let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(report["accounts"], 3, "{report}");
        assert_eq!(report["from"], "postgres");
        home.extra_config = pg_config.replace(
            "\n[store]\nbackend = \"postgres\"\n",
            "\n[store]\nbackend = \"files\"\n",
        );
        let r = home.run(&["accounts", "--json"], None);
        assert_eq!(r.stdout.matches("\"x/").count(), 3, "{}", r.stdout);
        let r = home.run(&["publish", post.to_str().unwrap()], None);
        assert_eq!(r.code, 0, "{}", r.all());
        assert_eq!(
            tweets_sent(&x, "before the move"),
            1,
            "published again after the move back"
        );

        // Refused while the daemon runs on the store.
        home.extra_config.push_str(DAEMON_CONFIG);
        let d = start_daemon(&home);
        let r = home.run(&["store", "migrate", "--to", "postgres"], None);
        assert_ne!(r.code, 0, "{}", r.all());
        assert!(r.stderr.contains("stop it first"), "{}", r.stderr);
        d.stop();
    }

    /// Every file under `dir` with its bytes.
    fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.insert(p.clone(), std::fs::read(&p).unwrap_or_default());
                }
            }
        }
        out
    }

    /// A full disk (a trigger raising SQLSTATE 53100) and a read-only
    /// server are each a clear error: the account already stored stays
    /// as it was, and a post whose claim cannot be written is not sent.
    #[test]
    fn a_full_disk_or_a_read_only_server_is_a_clear_error_and_loses_nothing() {
        let Some(db) = pg::database() else { return };
        let x = fake_x();
        let home = pg_home(Some(db.url()), Some(&x));
        let r = home.run(&["accounts", "add", "x"], Some(X_TOKEN));
        assert_eq!(r.code, 0, "{}", r.all());
        let sealed = db.sql("SELECT md5(sealed) FROM outreach_accounts");
        db.sql(
            "CREATE FUNCTION outreach_test_full() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = '53100'; END $$;
             CREATE TRIGGER full_accounts BEFORE INSERT OR UPDATE ON outreach_accounts
                FOR EACH ROW EXECUTE FUNCTION outreach_test_full();
             CREATE TRIGGER full_attempts BEFORE INSERT ON outreach_attempts
                FOR EACH ROW EXECUTE FUNCTION outreach_test_full();",
        );
        let r = home.run(&["accounts", "add", "x", "--account", "two"], Some(X_TOKEN));
        assert_ne!(r.code, 0, "{}", r.all());
        assert!(r.stderr.contains("out of disk space"), "{}", r.stderr);
        let post = home.post(
            "full.toml",
            "id = \"full\"\ntext = \"disk full\"\nto = [\"x\"]\n",
        );
        let r = home.run(&["publish", post.to_str().unwrap()], None);
        assert_ne!(r.code, 0, "{}", r.all());
        assert!(r.all().contains("out of disk space"), "{}", r.all());
        assert_eq!(tweets_sent(&x, "disk full"), 0, "sent without a claim");
        assert_eq!(db.sql("SELECT md5(sealed) FROM outreach_accounts"), sealed);

        db.sql("DROP TRIGGER full_accounts ON outreach_accounts; DROP TRIGGER full_attempts ON outreach_attempts;");
        let r = home.run(&["publish", post.to_str().unwrap()], None);
        assert_eq!(r.code, 0, "{}", r.all());
        assert_eq!(tweets_sent(&x, "disk full"), 1);

        db.sql(&format!(
            "ALTER DATABASE {} SET default_transaction_read_only = on",
            db.name
        ));
        let r = home.run(
            &["accounts", "add", "x", "--account", "three"],
            Some(X_TOKEN),
        );
        assert_ne!(r.code, 0, "{}", r.all());
        assert!(r.stderr.contains("read-only"), "{}", r.stderr);
        db.cluster
            .psql(
                "postgres",
                &format!(
                    "ALTER DATABASE {} RESET default_transaction_read_only",
                    db.name
                ),
            )
            .unwrap();
        let r = home.run(&["accounts", "--json"], None);
        assert_eq!(r.stdout.matches("\"x/").count(), 1, "{}", r.stdout);
    }

    /// A server that stops and comes back: a command started meanwhile
    /// waits for it (store.connect_retry_secs) and succeeds; a running
    /// daemon carries on, publishes once, and takes its journal lock
    /// again.
    #[test]
    fn a_restarted_server_is_waited_out_and_loses_nothing() {
        let Some((cluster, db)) = pg::own_cluster() else {
            return;
        };
        let x = fake_x();
        let mut home = pg_home(Some(db.url()), Some(&x));
        home.extra_config = home
            .extra_config
            .replace("connect_retry_secs = 2", "connect_retry_secs = 20");
        let r = home.run(&["accounts", "add", "x"], Some(X_TOKEN));
        assert_eq!(r.code, 0, "{}", r.all());
        home.extra_config.push_str(DAEMON_CONFIG);
        let posts = home.path().join("posts");
        std::fs::create_dir_all(&posts).unwrap();
        let d = start_daemon(&home);

        cluster.halt();
        let post = home.post(
            "r.toml",
            "id = \"restart\"\ntext = \"after a restart\"\nto = [\"x\"]\n",
        );
        let publish = home
            .command(&["publish", post.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_secs(2));
        cluster.resume();
        let out = publish.wait_with_output().unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{all}");
        assert!(!all.contains("PLANTED"));
        assert_eq!(tweets_sent(&x, "after a restart"), 1);

        // The daemon publishes from its folder after the restart.
        std::fs::write(
            posts.join("d.toml"),
            "id = \"from-daemon\"\ntext = \"daemon after restart\"\nto = [\"x\"]\n",
        )
        .unwrap();
        wait_until("the daemon to publish", Duration::from_secs(30), || {
            tweets_sent(&x, "daemon after restart") == 1
        });
        std::thread::sleep(Duration::from_secs(6));
        assert_eq!(tweets_sent(&x, "daemon after restart"), 1);
        let log = d.stop();
        assert!(!log.contains("panicked"), "{log}");
        assert!(log.contains("taking the lock again"), "{log}");
    }

    /// A CA and a certificate for 127.0.0.1 it signed, as PEM:
    /// (ca, cert, key).
    fn tls_material() -> (String, String, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "outreach test CA");
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        (ca.pem(), cert.pem(), key.serialize_pem())
    }

    /// TLS to the server: with `sslmode=verify-full` and the server's CA
    /// the store and the journal work (and the server takes nothing
    /// else); without TLS, or with another CA, each is a clear error that
    /// says what to change.
    #[test]
    fn tls_to_the_server_is_verified_and_refusals_say_what_to_change() {
        let Some((cluster, db)) = pg::own_cluster() else {
            return;
        };
        let (ca, cert, key) = tls_material();
        cluster.require_tls(&cert, &key);
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca).unwrap();
        let x = fake_x();
        let tls = format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            db.url(),
            ca_file.display()
        );
        let home = pg_home(Some(tls), Some(&x));
        let r = home.run(&["accounts", "add", "x"], Some(X_TOKEN));
        assert_eq!(r.code, 0, "{}", r.all());
        let post = home.post(
            "t.toml",
            "id = \"tls\"\ntext = \"over tls\"\nto = [\"x\"]\n",
        );
        let r = home.run(&["publish", post.to_str().unwrap()], None);
        assert_eq!(r.code, 0, "{}", r.all());
        assert_eq!(tweets_sent(&x, "over tls"), 1);
        assert_eq!(
            db.sql("SELECT state FROM outreach_deliveries WHERE post = 'tls'"),
            "published"
        );

        // Without TLS: refused, and the message says to turn it on.
        let plain = pg_home(Some(format!("{}?sslmode=disable", db.url())), None);
        let r = plain.run(&["accounts"], None);
        assert_ne!(r.code, 0, "{}", r.all());
        assert!(r.stderr.contains("accepts only TLS"), "{}", r.stderr);
        assert!(r.stderr.contains("sslmode=verify-full"), "{}", r.stderr);

        // A CA that did not sign the server's certificate.
        let (other_ca, _, _) = tls_material();
        let other = dir.path().join("other-ca.pem");
        std::fs::write(&other, other_ca).unwrap();
        let wrong = pg_home(
            Some(format!(
                "{}?sslmode=verify-full&sslrootcert={}",
                db.url(),
                other.display()
            )),
            None,
        );
        let r = wrong.run(&["accounts"], None);
        assert_ne!(r.code, 0, "{}", r.all());
        assert!(r.stderr.contains("TLS"), "{}", r.stderr);
        assert!(r.stderr.contains("sslrootcert"), "{}", r.stderr);
    }

    /// Daemons killed while one of them has a rotating refresh in flight
    /// lose nothing: the refresh's answer, sealed into the database by
    /// the exchange's helper, is applied by the daemon started next, so
    /// the refresh token is spent once and the account stays healthy.
    #[test]
    fn daemons_killed_mid_refresh_lose_no_token() {
        let Some(db) = pg::database() else { return };
        let x = fake_x();
        let mut a = pg_home(Some(db.url()), Some(&x));
        let r = a.run(&["accounts"], None);
        assert_eq!(r.code, 0, "{}", r.all());
        let mut b = pg_home(Some(db.url()), Some(&x));
        std::fs::copy(a.path().join("identity.txt"), b.path().join("identity.txt")).unwrap();
        for h in [&mut a, &mut b] {
            h.extra_config.push_str(DAEMON_CONFIG);
        }
        let daemons = [start_daemon(&a), start_daemon(&b)];
        // The answer arrives after a while: the daemons die before it does.
        *x.state.answer_delay.lock().unwrap() = Duration::from_millis(1500);
        import_x(&a, &x);
        wait_until(
            "a daemon to send the refresh",
            Duration::from_secs(30),
            || x.state.oauth.lock().unwrap().refresh_calls >= 1,
        );
        for mut d in daemons {
            d.child.kill().unwrap();
            let _ = d.child.wait();
        }
        *x.state.answer_delay.lock().unwrap() = Duration::ZERO;
        let d = start_daemon(&b);
        wait_until("the answer to be applied", Duration::from_secs(30), || {
            db.sql("SELECT count(*) FROM outreach_answers") == "0"
                && db.sql("SELECT state FROM outreach_accounts") == "healthy"
                && db.sql(
                    "SELECT next_refresh > now() + interval '10 minutes' FROM outreach_accounts",
                ) == "t"
        });
        let log = d.stop();
        let o = x.state.oauth.lock().unwrap();
        assert_eq!(
            o.reused, 0,
            "a rotated refresh token was spent twice:\n{log}"
        );
        assert_eq!(o.refresh_calls, 1, "the sealed answer was not used:\n{log}");
    }

    /// `store rekey --add-recipient` on PostgreSQL: every row opens with
    /// the added key alone, and later writes are sealed to it too — also
    /// those of a daemon that was running before it was added (its write
    /// is refused for naming old recipients, and it reads them again).
    #[test]
    fn an_added_recipient_opens_every_row_and_every_later_write() {
        let Some(db) = pg::database() else { return };
        let x = fake_x();
        let mut home = pg_home(Some(db.url()), Some(&x));
        import_x(&home, &x);
        let r = home.run(&["accounts", "add", "x", "--account", "two"], Some(X_TOKEN));
        assert_eq!(r.code, 0, "{}", r.all());
        home.extra_config.push_str(DAEMON_CONFIG);
        let d = start_daemon(&home);
        // The imported token has expired: the daemon refreshes it first.
        wait_until("the first refresh", Duration::from_secs(30), || {
            x.state.oauth.lock().unwrap().refresh_calls >= 1
        });

        let spare = age::x25519::Identity::generate();
        let recipient = spare.to_public().to_string();
        let r = home.run(&["store", "rekey", "--add-recipient", &recipient], None);
        assert_eq!(r.code, 0, "{}", r.all());
        assert!(r.stdout.contains("re-encrypted 2 values"), "{}", r.stdout);
        let opens = |account: &str| {
            let sealed = unhex(&db.sql(&format!(
                "SELECT encode(sealed, 'hex') FROM outreach_accounts WHERE account = '{account}'"
            )));
            open_with(&sealed, &[&spare as &dyn age::Identity]).is_some()
        };
        assert!(
            opens("default") && opens("two"),
            "a row does not open with the added key"
        );

        // The running daemon writes next: sealed to the added key too.
        let md5 = || db.sql("SELECT md5(sealed) FROM outreach_accounts WHERE account = 'default'");
        let before = md5();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (code, body) = rt
            .block_on(d.try_call("POST", "/accounts/x/default/refresh", None))
            .unwrap();
        assert_eq!(code, 200, "{body}");
        wait_until("the daemon's write", Duration::from_secs(20), || {
            md5() != before
        });
        assert!(
            opens("default"),
            "the daemon sealed to the recipients it had read before"
        );

        // A second key: writes name both (the set's tag matches the
        // server's) and open with either.
        let spare2 = age::x25519::Identity::generate();
        let r = home.run(
            &[
                "store",
                "rekey",
                "--add-recipient",
                &spare2.to_public().to_string(),
            ],
            None,
        );
        assert_eq!(r.code, 0, "{}", r.all());
        let r = home.run(
            &["accounts", "add", "x", "--account", "three"],
            Some(X_TOKEN),
        );
        assert_eq!(r.code, 0, "{}", r.all());
        let sealed = unhex(
            &db.sql("SELECT encode(sealed, 'hex') FROM outreach_accounts WHERE account = 'three'"),
        );
        assert!(open_with(&sealed, &[&spare as &dyn age::Identity]).is_some());
        assert!(open_with(&sealed, &[&spare2 as &dyn age::Identity]).is_some());

        // Moving to a new identity is not done on PostgreSQL, and says so.
        let r = home.run(&["store", "rekey"], None);
        assert_ne!(r.code, 0, "{}", r.all());
        assert!(r.stderr.contains("adds recipients only"), "{}", r.stderr);
        let log = d.stop();
        assert!(!log.contains("AGE-SECRET-KEY-"), "{log}");
    }
}

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

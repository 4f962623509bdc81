//! What every store driver must do, written against the traits only.
//! A driver's tests call `suite!(factory)`, where `factory()` returns a
//! guard (kept alive for the test) and a fresh, empty store.
#![allow(clippy::disallowed_methods)] // staging areas are local directories

use std::io::{self, Read, Write};

use super::{Created, NewObject, StoreRead, StoreWrite};

fn put(store: &dyn StoreWrite, key: &str, bytes: &[u8]) -> Created {
    store
        .create_new(key, &NewObject::default(), &mut |w: &mut dyn Write| {
            w.write_all(bytes)
        })
        .unwrap_or_else(|error| panic!("create {key}: {error:?}"))
}

fn read(store: &dyn StoreRead, key: &str) -> Vec<u8> {
    super::read_all(store, key).unwrap()
}

fn keys(store: &dyn StoreRead, prefix: &str, after: Option<&str>) -> Vec<String> {
    store
        .list(prefix, after)
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect()
}

pub fn create_never_replaces(store: &dyn StoreWrite) {
    assert_eq!(put(store, "a", b"first"), Created::Created);
    assert_eq!(put(store, "a", b"second!"), Created::PresentDifferent);
    // Same length, other bytes: still different.
    assert_eq!(put(store, "a", b"fir5t"), Created::PresentDifferent);
    assert_eq!(read(store, "a"), b"first");
}

pub fn create_of_identical_content(store: &dyn StoreWrite) {
    assert_eq!(put(store, "a", b"same"), Created::Created);
    assert_eq!(put(store, "a", b"same"), Created::AlreadyPresentSame);
    assert_eq!(read(store, "a"), b"same");
    assert_eq!(keys(store, "", None), ["a"], "no temporary object is left");
}

pub fn concurrent_creates_have_one_winner(store: &dyn StoreWrite) {
    let outcomes: Vec<Created> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4u8)
            .map(|n| scope.spawn(move || put(store, "race", &vec![n; 1 << 16])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created = outcomes.iter().filter(|o| **o == Created::Created).count();
    assert_eq!(created, 1, "{outcomes:?}");
    let kept = read(store, "race");
    assert_eq!(kept.len(), 1 << 16);
    assert!(
        kept.iter().all(|b| *b == kept[0]),
        "one writer's bytes, whole"
    );
}

pub fn failed_fill_leaves_nothing(store: &dyn StoreWrite) {
    let result = store.create_new("a", &NewObject::default(), &mut |w: &mut dyn Write| {
        w.write_all(b"half")?;
        Err(io::Error::other("source broke"))
    });
    assert!(matches!(result, Err(super::WriteError::Write(_))));
    assert!(store.stat("a").unwrap().is_none());
    assert!(
        keys(store, "", None).is_empty(),
        "no temporary object is left"
    );
}

pub fn listing_order_and_start_after(store: &dyn StoreWrite) {
    for key in ["b", "a", "c2", "c10"] {
        put(store, key, key.as_bytes());
    }
    store
        .write_stream("group/x", &mut |w: &mut dyn Write| w.write_all(b"x"))
        .unwrap();
    // Byte order of keys, objects only, nothing from below a prefix.
    assert_eq!(keys(store, "", None), ["a", "b", "c10", "c2"]);
    assert_eq!(keys(store, "", Some("b")), ["c10", "c2"]);
    assert_eq!(keys(store, "", Some("bb")), ["c10", "c2"]);
    assert!(keys(store, "", Some("c2")).is_empty());
    assert_eq!(keys(store, "group/", None), ["group/x"]);
    assert_eq!(store.list_prefixes("").unwrap(), ["group"]);
    let listed = store.list("", None).unwrap();
    assert_eq!(listed[0].size, 1);
    assert_eq!(Some(&listed[0]), store.stat("a").unwrap().as_ref());
}

/// The copies of one name under several suffixes are found together (one
/// listing on object stores), only those asked for, in key order, with
/// what `stat` says of them; a neighbour's copies are not among them.
pub fn existing_of_finds_the_copies_of_a_name(store: &dyn StoreWrite) {
    for key in [
        "000000010000000000000002.zst",
        "000000010000000000000003",
        "000000010000000000000003.gz",
        "000000010000000000000003.zst",
        "000000010000000000000003x",
        "000000010000000000000004",
    ] {
        put(store, key, key.as_bytes());
    }
    let wanted: Vec<String> = ["", ".zst", ".lz4", ".gz", ".br"]
        .iter()
        .map(|suffix| format!("000000010000000000000003{suffix}"))
        .collect();
    let found = store.existing_of(&wanted).unwrap();
    let found_keys: Vec<&str> = found.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(
        found_keys,
        [
            "000000010000000000000003",
            "000000010000000000000003.gz",
            "000000010000000000000003.zst"
        ]
    );
    assert_eq!(
        Some(&found[1]),
        store.stat("000000010000000000000003.gz").unwrap().as_ref()
    );
    let none = ["000000010000000000000009".to_string()];
    assert!(store.existing_of(&none).unwrap().is_empty());
    assert!(store.existing_of(&[]).unwrap().is_empty());
}

/// A tree (a plain backup) is listed level by level: objects with their
/// sizes and groups, in key order, a group's key without its `/`.
pub fn tree_levels(store: &dyn StoreWrite) {
    for key in ["t/b", "t/a/x", "t/a/y/z", "t/c"] {
        store
            .write_stream(key, &mut |w: &mut dyn Write| w.write_all(key.as_bytes()))
            .unwrap();
    }
    let level = |prefix: &str| -> Vec<(String, super::TreeKind)> {
        store
            .tree_level(prefix)
            .unwrap()
            .into_iter()
            .map(|entry| (entry.key, entry.kind))
            .collect()
    };
    let object = |size: u64| super::TreeKind::Object { size };
    assert_eq!(
        level("t/"),
        [
            ("t/a".to_string(), super::TreeKind::Group),
            ("t/b".to_string(), object(3)),
            ("t/c".to_string(), object(3)),
        ]
    );
    assert_eq!(
        level("t/a/"),
        [
            ("t/a/x".to_string(), object(5)),
            ("t/a/y".to_string(), super::TreeKind::Group),
        ]
    );
    assert_eq!(level("t/a/y/"), [("t/a/y/z".to_string(), object(7))]);
}

pub fn stat_and_versions(store: &dyn StoreWrite) {
    assert!(store.stat("missing").unwrap().is_none());
    assert_eq!(
        store.open("missing").err().map(|e| e.kind()),
        Some(io::ErrorKind::NotFound)
    );
    let first = store
        .write_stream("k", &mut |w: &mut dyn Write| w.write_all(b"one"))
        .unwrap();
    assert_eq!(first.size, 3);
    assert_eq!(store.stat("k").unwrap().unwrap().version, first.version);
    // Posix versions are modification times: make the rewrite visibly later.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let second = store
        .write_stream("k", &mut |w: &mut dyn Write| w.write_all(b"three"))
        .unwrap();
    assert_ne!(first.version, second.version);
    assert_eq!(read(store, "k"), b"three");
}

pub fn ranged_reads(store: &dyn StoreWrite) {
    put(store, "r", b"0123456789");
    let range = |r: std::ops::Range<u64>| {
        let mut bytes = Vec::new();
        store
            .open_range("r", r)
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        bytes
    };
    assert_eq!(range(0..3), b"012");
    assert_eq!(range(4..7), b"456");
    assert_eq!(range(8..100), b"89");
    assert!(range(10..12).is_empty());
}

pub fn publish_is_all_or_nothing(store: &dyn StoreWrite) {
    let staging = store.stage("pitr-backup-b1").unwrap();
    let staged = staging.path().to_path_buf();
    std::fs::write(staging.path().join("backup_label"), b"label").unwrap();
    std::fs::write(staging.path().join("base.tar"), b"tar").unwrap();
    // Nothing of it is visible before publishing.
    assert!(store.stat("b1/backup_label").unwrap().is_none());
    assert!(!store.list_prefixes("").unwrap().iter().any(|p| p == "b1"));
    store.publish(staging, "b1").unwrap();
    assert_eq!(keys(store, "b1/", None), ["b1/backup_label", "b1/base.tar"]);
    assert_eq!(read(store, "b1/base.tar"), b"tar");
    // The staging area is used up: moved into place, or a local copy
    // deleted once uploaded.
    assert!(!staged.exists(), "{} left behind", staged.display());

    // A second group of the same name is refused, the first stays, and
    // the refused staging area is deleted.
    let other = store.stage("pitr-backup-b1").unwrap();
    let other_staged = other.path().to_path_buf();
    std::fs::write(other.path().join("backup_label"), b"other").unwrap();
    let error = store.publish(other, "b1").unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(read(store, "b1/backup_label"), b"label");
    assert!(
        !other_staged.exists(),
        "{} left behind",
        other_staged.display()
    );
}

/// A group written as streams (`begin_group`, object stores): invisible
/// while written, nothing left when dropped unpublished (a multipart
/// upload of several parts included), whole once published, and a second
/// group of the name refused. Stores that stage locally have no such
/// groups.
pub fn streamed_group_is_all_or_nothing(store: &dyn StoreWrite) {
    let big: Vec<u8> = (0..(20u32 << 20)).map(|i| (i % 251) as u8).collect();
    {
        let Some(group) = store.begin_group("s1").unwrap() else {
            return;
        };
        let mut tar = group.object("base.tar").unwrap();
        tar.write_all(&big).unwrap();
        assert!(!store.list_prefixes("").unwrap().iter().any(|p| p == "s1"));
        // Dropped unfinished and unpublished: the upload is aborted.
    }
    assert!(keys(store, "s1/", None).is_empty());
    assert!(keys(store, "", None).is_empty(), "no marker left");

    let group = store.begin_group("s1").unwrap().unwrap();
    let mut tar = group.object("base.tar").unwrap();
    tar.write_all(&big).unwrap();
    tar.finish().unwrap();
    let mut manifest = group.object("backup_manifest").unwrap();
    manifest.write_all(b"{}").unwrap();
    manifest.finish().unwrap();
    assert!(!store.list_prefixes("").unwrap().iter().any(|p| p == "s1"));
    group.publish().unwrap();
    assert_eq!(store.list_prefixes("").unwrap(), ["s1"]);
    assert_eq!(
        keys(store, "s1/", None),
        ["s1/backup_manifest", "s1/base.tar"]
    );
    assert!(read(store, "s1/base.tar") == big);

    let error = store.begin_group("s1").err().map(|e| e.kind());
    assert_eq!(error, Some(io::ErrorKind::AlreadyExists));
    assert_eq!(
        keys(store, "", None),
        Vec::<String>::new(),
        "no marker left"
    );
}

pub fn delete(store: &dyn StoreWrite) {
    put(store, "a", b"a");
    put(store, "b", b"b");
    store.delete(&["a", "never-there"]).unwrap();
    assert_eq!(keys(store, "", None), ["b"]);
    store.sync(&["b"]).unwrap();

    let staging = store.stage("pitr-backup-g").unwrap();
    std::fs::write(staging.path().join("f"), b"f").unwrap();
    store.publish(staging, "g").unwrap();
    store.delete_group("g").unwrap();
    assert!(store.stat("g/f").unwrap().is_none());
    assert!(!store
        .list_prefixes("")
        .unwrap()
        .iter()
        .any(|p| p.contains('g')));
    assert!(store.delete_group("g").is_err(), "nothing left to delete");
}

/// Groups readers do not see are reported as unfinished while written
/// and after their writer died (here: forgotten without being dropped, as
/// a killed process leaves them), and `delete_group` under the reported
/// name removes every trace.
pub fn hidden_groups_are_found_and_removable(store: &dyn StoreWrite) {
    assert!(store.hidden_groups().unwrap().is_empty());
    let hidden_name = match store.begin_group("h1").unwrap() {
        // Object stores: the group is written under its name, hidden by a
        // marker.
        Some(group) => {
            let mut tar = group.object("base.tar").unwrap();
            tar.write_all(b"tar").unwrap();
            tar.finish().unwrap();
            std::mem::forget(group);
            "h1".to_string()
        }
        // Posix: the group is staged in a hidden directory of the store.
        None => {
            let staging = store.stage("pitr-backup-h1").unwrap();
            std::fs::write(staging.path().join("base.tar"), b"tar").unwrap();
            let name = staging
                .path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            std::mem::forget(staging);
            name
        }
    };
    let hidden = store.hidden_groups().unwrap();
    assert_eq!(hidden.len(), 1, "{hidden:?}");
    assert_eq!(hidden[0].name, hidden_name);
    assert_eq!(hidden[0].state, super::HiddenState::Unfinished);
    let age = std::time::SystemTime::now()
        .duration_since(hidden[0].since)
        .unwrap_or_default();
    assert!(age.as_secs() < 600, "hidden {age:?} ago");
    assert!(
        !store.list_prefixes("").unwrap().iter().any(|p| p == "h1"),
        "still hidden"
    );

    store.delete_group(&hidden_name).unwrap();
    assert!(store.hidden_groups().unwrap().is_empty());
    assert!(keys(store, "", None).is_empty(), "no marker left");
    assert!(store.list_prefixes("").unwrap().is_empty(), "nothing left");
}

/// One `#[test]` per contract rule for the driver made by `$factory`.
/// With `optional`, the factory returns an `Option` and a test whose
/// store cannot be had (a server not installed) returns early; the factory
/// says why.
#[macro_export]
#[doc(hidden)]
macro_rules! store_contract_suite {
    (optional $factory:path) => {
        $crate::store_contract_suite!(@rules [optional] $factory);
    };
    ($factory:path) => {
        $crate::store_contract_suite!(@rules [] $factory);
    };
    (@rules [$($optional:ident)?] $factory:path) => {
        $crate::store_contract_suite!(@tests [$($optional)?] $factory;
            create_never_replaces,
            create_of_identical_content,
            concurrent_creates_have_one_winner,
            failed_fill_leaves_nothing,
            listing_order_and_start_after,
            existing_of_finds_the_copies_of_a_name,
            tree_levels,
            stat_and_versions,
            ranged_reads,
            publish_is_all_or_nothing,
            streamed_group_is_all_or_nothing,
            hidden_groups_are_found_and_removable,
            delete);
    };
    (@tests [] $factory:path; $($rule:ident),*) => {
        $(
            #[test]
            fn $rule() {
                let (_guard, store) = $factory();
                $crate::repo::store::contract::$rule(&store);
            }
        )*
    };
    (@tests [optional] $factory:path; $($rule:ident),*) => {
        $(
            #[test]
            fn $rule() {
                let Some((_guard, store)) = $factory(stringify!($rule)) else {
                    return;
                };
                $crate::repo::store::contract::$rule(&store);
            }
        )*
    };
}
pub use store_contract_suite as suite;

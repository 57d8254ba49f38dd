//! While a store holds the cache open for writing (as the daemon does,
//! through `io::open` and its exclusive lock), inspect and fsck refuse it
//! with exit 2 and a message that says the device is in use, instead of
//! reading a cache that changes under them. Once the store is closed, the
//! same device checks clean.

mod common;

use common::*;
use ringcache::io::{self, EngineKind, OpenOptions};
use ringcache::store::{FormatOptions, Store, StoreConfig, format};

#[test]
fn refused_while_a_store_holds_it() {
    let f = temp_image(&vec![0u8; SMALL_DEVICE as usize]);
    let p = f.path().to_str().unwrap().to_string();
    let engine = io::open(
        f.path(),
        &OpenOptions {
            engine: EngineKind::Psync,
            ..Default::default()
        },
    )
    .expect("open read-write");
    format(
        engine.as_ref(),
        &FormatOptions {
            tag: "busy".into(),
            geometry: small_geometry(),
            force: false,
        },
    )
    .expect("format");
    let store = Store::open(engine, StoreConfig::default()).expect("store");
    populate(&store);

    let r = ringcache(&["fsck", &p]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("is in use"), "{}", r.stderr);
    assert!(r.stderr.contains("stop the daemon"), "{}", r.stderr);

    let r = ringcache(&["fsck", "--json", &p]);
    assert_eq!(r.code, 2);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(v["result"], "failed");
    assert!(
        v["failure"].as_str().unwrap().contains("is in use"),
        "{v:#}"
    );

    for view in [&[][..], &["objects"], &["region", "0"]] {
        let mut args = vec!["inspect", p.as_str()];
        args.extend_from_slice(view);
        let r = ringcache(&args);
        assert_eq!(r.code, 2, "inspect {view:?}");
        assert!(r.stderr.contains("is in use"), "{}", r.stderr);
        assert!(r.stdout.is_empty(), "nothing printed: {}", r.stdout);
    }

    store.close().expect("close");
    let (code, report) = fsck(f.path());
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["checked"]["objects"], 3);
}

//! `inspect objects` marks the object under which the cookie layer keeps a
//! volume's coherency data as internal (JSON `internal: true`, a note in
//! the text view), so it is not taken for a netfs file; user objects are
//! not marked.

mod common;

use common::*;
use ringcache::cookie::{CacheBackend, VOLUME_COHERENCY_KEY};
use ringcache::store::{Store, StoreConfig};
use serde_json::Value;

#[test]
fn the_volume_coherency_record_is_marked_internal() {
    let sim = formatted();
    let store = Store::open(sim.clone(), StoreConfig::default()).expect("open");
    // A volume acquired through the cookie layer, with one file.
    let v = CacheBackend::acquire_volume(&store, b"netfs", b"cell-1").expect("volume");
    let f = store.create(v, b"file", b"", 4096).expect("file");
    store.write(f, 0, &pattern(5, 4096)).expect("write");
    store.close().expect("close");
    let img = temp_image(&sim.current_image());
    let p = img.path().to_str().unwrap();

    let r = ringcache(&["inspect", p, "objects", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rows: Value = serde_json::from_str(&r.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for row in rows {
        let internal = row["internal"].as_bool().unwrap();
        let is_coherency = row["key_hex"]
            == VOLUME_COHERENCY_KEY
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>();
        assert_eq!(internal, is_coherency, "{row}");
    }
    let text = ringcache(&["inspect", p, "objects"]);
    assert_eq!(text.code, 0);
    let marked: Vec<&str> = text
        .stdout
        .lines()
        .filter(|l| l.contains("internal"))
        .collect();
    assert_eq!(marked.len(), 1, "{}", text.stdout);
    assert!(!marked[0].contains("/ file"), "{}", text.stdout);
}

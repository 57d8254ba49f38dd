//! Every inspect view prints JSON of the documented shape (docs/TOOLS.md)
//! showing what was written: volumes, objects (text and binary keys),
//! one object's coherency data and extents, regions and one region's
//! extents. Keys given as text or as hex: select the same objects; a name
//! that does not exist exits 2.

mod common;

use common::*;
use serde_json::Value;

fn json(args: &[&str]) -> Value {
    let r = ringcache(args);
    assert_eq!(r.code, 0, "inspect {args:?}: {}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", r.stdout))
}

#[test]
fn views_show_what_was_written() {
    let f = temp_image(&clean_image());
    let p = f.path().to_str().unwrap();

    let s = json(&["inspect", p, "--json"]);
    assert_eq!(s["format_version"], 1);
    assert_eq!(s["tag"], "tools-test");
    assert_eq!(s["device_bytes"], SMALL_DEVICE);
    assert_eq!(s["region_bytes"], 64 << 10);
    assert_eq!(s["region_count"], 64);
    assert_eq!(s["regions_in_use"], 2);
    assert_eq!(s["regions_free"], 62);
    assert_eq!(s["volumes"], 2);
    assert_eq!(s["objects"], 3);
    assert_eq!(s["extents"], 4);
    assert_eq!(s["bytes_cached"], 40_000 + 8192 + 65_536);
    assert_eq!(s["clean_shutdown"], true);
    assert!(s["last_checkpoint"]["seq"].as_u64().unwrap() >= 2, "{s:#}");
    assert_eq!(s["damage"], Value::Array(vec![]));
    assert_eq!(s["uuid"].as_str().unwrap().len(), 36);

    let v = json(&["inspect", p, "volumes", "--json"]);
    let keys: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["vol1", "vol2"]);
    assert_eq!(v[0]["objects"], 2);
    assert_eq!(v[1]["bytes_cached"], 65_536);

    let o = json(&["inspect", p, "objects", "--json"]);
    let keys: Vec<&str> = o
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["alpha", "hex:000102ff", "gamma"]);
    assert_eq!(o[1]["key_hex"], "000102ff");
    assert_eq!(o[1]["volume"], "vol1");
    let o2 = json(&["inspect", p, "objects", "--volume", "vol2", "--json"]);
    assert_eq!(o2.as_array().unwrap().len(), 1);
    assert_eq!(o2[0]["key"], "gamma");
    assert_eq!(o2[0]["size"], 100_000);
    assert_eq!(o2[0]["bytes_cached"], 65_536);
    // The volume named in hex selects the same.
    let o3 = json(&[
        "inspect",
        p,
        "objects",
        "--volume",
        "hex:766f6c32",
        "--json",
    ]);
    assert_eq!(o3, o2);

    let b = json(&["inspect", p, "object", "vol1", "hex:000102ff", "--json"]);
    assert_eq!(b["aux_hex"], "7631");
    assert_eq!(b["aux_len"], 2);
    assert_eq!(b["size"], 8192);
    assert_eq!(b["data_gen"], 1);
    assert_eq!(b["dirty"], false);
    assert_eq!(b["extent_list"].as_array().unwrap().len(), 1);
    assert_eq!(b["extent_list"][0]["length"], 8192);

    let g = json(&["inspect", p, "object", "vol2", "gamma", "--json"]);
    let ext = g["extent_list"].as_array().unwrap();
    assert_eq!(ext.len(), 2, "gamma spans two regions: {g:#}");
    let total: u64 = ext.iter().map(|e| e["length"].as_u64().unwrap()).sum();
    assert_eq!(total, 65_536);
    assert_ne!(ext[0]["region"], ext[1]["region"]);

    let r = json(&["inspect", p, "regions", "--json"]);
    let rows = r.as_array().unwrap();
    assert_eq!(rows.len(), 64);
    let in_use: Vec<&Value> = rows.iter().filter(|r| r["state"] == "in-use").collect();
    assert_eq!(in_use.len(), 2);
    for row in &in_use {
        assert_eq!(row["header"]["status"], "valid");
        assert_eq!(row["header"]["seq"], row["seq"]);
    }
    let live: u64 = in_use
        .iter()
        .map(|r| r["live_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(live, 40_000 + 8192 + 65_536);

    let idx = ext[1]["region"].as_u64().unwrap().to_string();
    let d = json(&["inspect", p, "region", &idx, "--json"]);
    assert_eq!(d["raw_header"]["magic"], "RCREGION");
    assert_eq!(d["raw_header"]["region_index"].to_string(), idx);
    assert_eq!(d["raw_header"]["uuid"], s["uuid"]);
    assert_eq!(d["extent_list"][0]["key"], "gamma");
    assert_eq!(d["extent_list"][0]["volume"], "vol2");

    // Names that do not exist: exit 2 and a message.
    for args in [
        &["inspect", p, "object", "vol1", "nope"][..],
        &["inspect", p, "object", "novol", "alpha"],
        &["inspect", p, "objects", "--volume", "hex:zz"],
        &["inspect", p, "region", "64"],
    ] {
        let r = ringcache(args);
        assert_eq!(r.code, 2, "{args:?}");
        assert!(!r.stderr.is_empty());
    }

    // The text views run too.
    for view in [
        &[][..],
        &["volumes"],
        &["objects"],
        &["regions"],
        &["region", "0"],
    ] {
        let mut args = vec!["inspect", p];
        args.extend_from_slice(view);
        assert_eq!(ringcache(&args).code, 0, "{args:?}");
    }
    let r = ringcache(&["inspect", p, "object", "vol2", "gamma"]);
    assert!(
        r.stdout.contains("coherency data   2 bytes: 0102"),
        "{}",
        r.stdout
    );
}

//! Every operation of the protocol through real `ringfs serve`
//! processes on loopback: two clients, one changing, one checking; a
//! read-only export refuses every change.

mod common;

use common::{ServerProc, client, dirs, exercise_every_op};
use ringfs::client::ClientError;
use ringfs::wire::{SetAttr, Status, setattr};

#[test]
fn every_op_on_loopback() {
    let d = dirs();
    let srv = ServerProc::start(&d.export, &d.state, &[]);
    let a = client(srv.addr, "a");
    let b = client(srv.addr, "b");
    exercise_every_op(&a, &b);
    a.close().expect("farewell");
    b.close().expect("farewell");
}

#[test]
fn a_read_only_export_refuses_every_change() {
    let d = dirs();
    std::fs::write(d.export.join("f"), b"data").expect("write");
    std::fs::create_dir(d.export.join("sub")).expect("mkdir");
    let srv = ServerProc::start(&d.export, &d.state, &["--read-only"]);
    let a = client(srv.addr, "a");
    assert!(a.welcome().read_only);
    let root = a.root();
    let f = a.lookup(root, b"f").expect("lookup").attr.id;
    assert_eq!(a.read(f, 0, 10).expect("read").1, b"data");
    let ro = |r: Result<(), ClientError>| {
        assert!(
            matches!(r, Err(ClientError::Status(Status::ReadOnly))),
            "{r:?}"
        )
    };
    ro(a.write(f, 0, b"x").map(drop));
    ro(a.append(f, b"x").map(drop));
    ro(a.setattr(
        f,
        SetAttr {
            mask: setattr::SIZE,
            ..SetAttr::default()
        },
    )
    .map(drop));
    ro(a.create(root, b"g", 0o644, 0).map(drop));
    ro(a.mkdir(root, b"d", 0o755).map(drop));
    ro(a.unlink(root, b"f"));
    ro(a.rmdir(root, b"sub"));
    ro(a.rename(root, b"f", root, b"g", 0));
    ro(a.symlink(root, b"l", b"f").map(drop));
    ro(a.link(f, root, b"h").map(drop));
    assert_eq!(std::fs::read(d.export.join("f")).expect("read"), b"data");
}

#[test]
fn the_server_refuses_bad_set_ups() {
    let d = dirs();
    let run = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ringfs"))
            .args(args)
            .output()
            .expect("run ringfs")
    };
    let export = d.export.as_os_str();
    let listen = std::ffi::OsStr::new("127.0.0.1:0");
    // A state directory inside the export.
    let inside = d.export.join("state");
    let out = run(&[
        "serve".as_ref(),
        export,
        "--listen".as_ref(),
        listen,
        "--state".as_ref(),
        inside.as_os_str(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("inside the export"));
    // An export that does not exist.
    let missing = d.tmp.path().join("missing");
    let state = d.state.as_os_str();
    let out = run(&[
        "serve".as_ref(),
        missing.as_os_str(),
        "--listen".as_ref(),
        listen,
        "--state".as_ref(),
        state,
    ]);
    assert!(!out.status.success());
    // A state directory already in use by a running server.
    let _srv = ServerProc::start(&d.export, &d.state, &[]);
    let out = run(&[
        "serve".as_ref(),
        export,
        "--listen".as_ref(),
        listen,
        "--state".as_ref(),
        state,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));
    // A promise of 0 s is refused by the command line.
    let out = run(&[
        "serve".as_ref(),
        export,
        "--listen".as_ref(),
        listen,
        "--promise-secs".as_ref(),
        "0".as_ref(),
    ]);
    assert!(!out.status.success());
}

//! A device that holds no ringcache cache (zeros, or other data) is not
//! damage but something fsck cannot check: exit 2, with a message saying
//! so, as text and in the JSON report.

mod common;

use common::*;

#[test]
fn zeros_and_other_data() {
    for image in [vec![0u8; 1 << 20], pattern(9, 1 << 20)] {
        let f = temp_image(&image);
        let (code, report) = fsck(f.path());
        assert_eq!(code, 2, "{report:#}");
        assert_eq!(report["result"], "failed");
        assert!(
            report["failure"]
                .as_str()
                .unwrap()
                .contains("not a ringcache cache"),
            "{report:#}"
        );
        let p = f.path().to_str().unwrap();
        let r = ringcache(&["inspect", p]);
        assert_eq!(r.code, 2);
        assert!(r.stderr.contains("not a ringcache cache"), "{}", r.stderr);
    }
}

//! What fsck found and how much it checked: the [`Report`], its findings
//! and their [`Severity`], counted and rendered as text (`--json` prints the
//! same struct through serde; docs/TOOLS.md has its schema).

use serde::Serialize;

use crate::text;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Normal for a healthy cache; reported so the picture is complete.
    Info,
    /// Unexpected, but nothing is lost.
    Warning,
    /// Damage: fsck exits 1.
    Error,
}

impl Severity {
    fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// The kinds of structure a finding is about (the `structure` field).
pub mod structure {
    pub const DEVICE: &str = "device";
    pub const SUPERBLOCK: &str = "superblock";
    pub const CHECKPOINT: &str = "checkpoint";
    pub const METADATA_LOG: &str = "metadata-log";
    pub const REGION_HEADER: &str = "region-header";
    pub const DATA_BLOCK: &str = "data-block";
    pub const INDEX: &str = "index";
}

/// One thing fsck found.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// Which kind of structure: one of [`structure`].
    pub structure: &'static str,
    /// Which one, in words (e.g. `copy A`, `slot 1`, `block seq 12`).
    pub location: String,
    /// Byte offset on the device of the structure, where there is one.
    pub device_offset: Option<u64>,
    pub message: String,
}

/// How much was checked.
#[derive(Debug, Default, Serialize)]
pub struct Checked {
    pub superblock_copies: u32,
    pub checkpoint_slots: u32,
    pub checkpoint_records: u64,
    pub log_blocks: u64,
    pub log_records: u64,
    pub region_headers: u64,
    pub objects: u64,
    pub extents: u64,
    pub data_blocks: u64,
    pub data_bytes: u64,
}

/// Everything fsck has to say (`fsck --json` prints this).
#[derive(Debug, Serialize)]
pub struct Report {
    pub device: String,
    pub device_bytes: u64,
    /// The superblock's clean flag; `null` when no superblock is usable.
    pub clean_shutdown: Option<bool>,
    pub checked: Checked,
    pub findings: Vec<Finding>,
    pub errors: u64,
    pub warnings: u64,
    pub infos: u64,
    /// `clean`, `damaged` or `failed`.
    pub result: &'static str,
    pub exit_code: i32,
    /// Why fsck could not run to the end (exit code 2).
    pub failure: Option<String>,
}

impl Report {
    /// The report of `device`, `device_bytes` long, before any check:
    /// clean until a finding says otherwise.
    pub(super) fn new(device: &str, device_bytes: u64) -> Report {
        Report {
            device: device.to_string(),
            device_bytes,
            clean_shutdown: None,
            checked: Checked::default(),
            findings: Vec::new(),
            errors: 0,
            warnings: 0,
            infos: 0,
            result: "clean",
            exit_code: 0,
            failure: None,
        }
    }

    /// A report for a device that could not even be opened.
    pub fn failed(device: &str, why: String) -> Report {
        Report {
            result: "failed",
            exit_code: 2,
            failure: Some(why),
            ..Report::new(device, 0)
        }
    }

    pub(super) fn finish(mut self) -> Report {
        let count = |s| self.findings.iter().filter(|f| f.severity == s).count() as u64;
        self.errors = count(Severity::Error);
        self.warnings = count(Severity::Warning);
        self.infos = count(Severity::Info);
        (self.result, self.exit_code) = if self.failure.is_some() {
            ("failed", 2)
        } else if self.errors > 0 {
            ("damaged", 1)
        } else {
            ("clean", 0)
        };
        self
    }

    pub(super) fn add(
        &mut self,
        severity: Severity,
        structure: &'static str,
        location: impl Into<String>,
        device_offset: Option<u64>,
        message: impl Into<String>,
    ) {
        self.findings.push(Finding {
            severity,
            structure,
            location: location.into(),
            device_offset,
            message: message.into(),
        });
    }

    /// The report as text for people.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let c = &self.checked;
        let _ = writeln!(
            out,
            "fsck {} ({})",
            self.device,
            text::bytes(self.device_bytes)
        );
        let _ = write!(
            out,
            "{}",
            if self.failure.is_some() && c.superblock_copies == 0 {
                String::new()
            } else {
                format!(
                    "checked: {} superblock copies, {} checkpoint slots ({} records), {} log blocks ({} records), \
             {} region headers, {} objects, {} extents, {} data blocks ({})\n",
                    c.superblock_copies,
                    c.checkpoint_slots,
                    c.checkpoint_records,
                    c.log_blocks,
                    c.log_records,
                    c.region_headers,
                    c.objects,
                    c.extents,
                    c.data_blocks,
                    text::bytes(c.data_bytes)
                )
            }
        );
        if let Some(clean) = self.clean_shutdown {
            let _ = writeln!(
                out,
                "last shutdown: {}",
                if clean { "clean" } else { "unclean" }
            );
        }
        for f in &self.findings {
            let at = f
                .device_offset
                .map(|o| format!(" (byte {o})"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{:<8} {:<14} {}{}: {}",
                f.severity.name(),
                f.structure,
                f.location,
                at,
                f.message
            );
        }
        if let Some(why) = &self.failure {
            let _ = writeln!(out, "fsck could not finish: {why}");
        }
        let _ = writeln!(
            out,
            "result: {} ({} errors, {} warnings, {} info)",
            self.result, self.errors, self.warnings, self.infos
        );
        out
    }
}

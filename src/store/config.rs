//! The store's configuration: culling thresholds and limits.

use std::time::Duration;

/// cachefilesd-style culling thresholds, in percent. Space: of regions
/// free; objects: of the object limit (or checkpoint capacity) free.
/// Culling starts below `*cull`, goes on until `*run` is free again, and
/// writers wait below `*stop`. Each needs stop < cull < run < 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CullThresholds {
    pub brun: u8,
    pub bcull: u8,
    pub bstop: u8,
    pub frun: u8,
    pub fcull: u8,
    pub fstop: u8,
}

impl Default for CullThresholds {
    /// cachefilesd's defaults: 10/7/3 percent.
    fn default() -> Self {
        CullThresholds {
            brun: 10,
            bcull: 7,
            bstop: 3,
            frun: 10,
            fcull: 7,
            fstop: 3,
        }
    }
}

impl CullThresholds {
    /// Check the ordering stop < cull < run < 100.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let check = |p: &str, run: u8, cull: u8, stop: u8| {
            if !(stop < cull && cull < run && run < 100) {
                return Err(format!(
                    "need {p}stop < {p}cull < {p}run < 100, got {p}stop={stop} {p}cull={cull} {p}run={run}"
                ));
            }
            Ok(())
        };
        check("b", self.brun, self.bcull, self.bstop)?;
        check("f", self.frun, self.fcull, self.fstop)
    }
}

/// How the store runs.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub cull: CullThresholds,
    /// Most objects the cache holds (default: derived from the checkpoint
    /// slot size, one object per 256 bytes of it).
    pub max_objects: Option<u64>,
    /// How long a writer waits for space held by objects in use.
    pub space_wait: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            cull: CullThresholds::default(),
            max_objects: None,
            space_wait: Duration::from_secs(5),
        }
    }
}

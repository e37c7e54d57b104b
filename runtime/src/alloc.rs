//! The allocator of both binaries (feature `jemalloc`, on by default in each of them).
//!
//! glibc's malloc keeps the peaks in RSS: after its first large free it raises its mmap
//! threshold, and the buffers of later peaks (list pages and NodeTrace bodies in the operator,
//! the ELF objects and kernel BTF of eBPF loading in the agent: ~40 MiB with every probe
//! attached) stay in its heap once freed. jemalloc with a background thread returns freed pages
//! after a second.

/// The global allocator of any binary that links this crate with the `jemalloc` feature.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its first allocation (before `main`): a background thread purges
/// freed pages after 1 s instead of the default 10 s on the next allocations, so the RSS falls
/// back soon after a burst. `MALLOC_CONF`-style string, NUL-ended; `_RJEM_MALLOC_CONF` in the
/// environment overrides it.
#[cfg(feature = "jemalloc")]
#[allow(unsafe_code, reason = "jemalloc reads its compile-time options from this exported symbol")]
#[allow(non_upper_case_globals, reason = "the C symbol's name")]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8; 43] = b"background_thread:true,dirty_decay_ms:1000\0";

/// The heap's bytes in use and the bytes of memory the allocator holds (freed pages not yet
/// returned included), from jemalloc's statistics; `None` without the `jemalloc` feature.
pub fn heap_stats() -> Option<(u64, u64)> {
    #[cfg(feature = "jemalloc")]
    {
        use tikv_jemalloc_ctl::{epoch, stats};
        // The statistics are a snapshot taken when the epoch advances.
        epoch::advance().ok()?;
        Some((stats::allocated::read().ok()? as u64, stats::resident::read().ok()? as u64))
    }
    #[cfg(not(feature = "jemalloc"))]
    None
}

/// `heap_allocated_bytes` and `heap_resident_bytes` (under the registry's prefix), read from
/// [`heap_stats`] at every scrape; nothing in builds without jemalloc. When the RSS grows, they
/// tell whether the program keeps more or the allocator has not given freed pages back yet.
#[derive(Debug)]
pub struct HeapCollector;

impl prometheus_client::collector::Collector for HeapCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let Some((allocated, resident)) = heap_stats() else { return Ok(()) };
        let gauges = [
            ("heap_allocated_bytes", "Heap bytes in use (jemalloc stats.allocated)", allocated),
            (
                "heap_resident_bytes",
                "Physical memory the allocator holds, freed pages not yet returned included (jemalloc stats.resident)",
                resident,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = prometheus_client::metrics::gauge::ConstGauge::new(value as i64);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

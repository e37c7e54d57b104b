//! A probe family's object attached on one rung of its ladder, and the walk down the ladder
//! that gets it there.
//!
//! ```text
//!  object loaded (programs not yet) ─► rung 1: load + attach every program ─ ok ─► LoadedFamily
//!                                       │ a program fails: unload the rung's programs
//!                                       ▼
//!                                      rung 2 … ─ none left ─► Err("rung: reason; …")
//! ```

use aya::{Btf, Ebpf};

use crate::config::{Filter, ProbeConfig};
use crate::ladder::{AttachEnv, Family, Rung, try_rung};
use crate::probe::AttachMethod;

/// A family's object, attached on one rung of its ladder. Dropping it detaches the links and
/// frees the programs and maps.
pub(crate) struct LoadedFamily {
    pub(crate) family: &'static Family,
    pub(crate) rung: &'static Rung,
    pub(crate) ebpf: Ebpf,
    /// Why the better rungs were not taken ("fentry: …; …"), empty on the first rung.
    pub(crate) fallbacks: String,
}

/// Tries the rungs of `family` on its loaded object, best first; the error is the reason of
/// every rung.
pub(crate) fn walk_ladder(
    family: &'static Family,
    mut ebpf: Ebpf,
    config: &ProbeConfig,
    btf: Option<&Btf>,
) -> Result<LoadedFamily, String> {
    let env = AttachEnv { btf, cgroup_root: &config.cgroup_skb_root };
    let mut reasons = Vec::new();
    for rung in family.rungs {
        let method = rung.method.name();
        if config.skip_methods.contains(&rung.method) {
            reasons.push(format!("{method}: skipped by configuration"));
            continue;
        }
        if config.filter == Filter::Process && rung.method == AttachMethod::CgroupSkb {
            // Its programs see the socket's cgroup v2 id only, never the process.
            reasons.push(format!("{method}: not used with the process filter"));
            continue;
        }
        match try_rung(&mut ebpf, rung, &env) {
            Ok(()) => {
                if !reasons.is_empty() {
                    tracing::info!(family = family.name, method, fell_back_from = %reasons.join("; "), "ladder");
                }
                let fallbacks = reasons.join("; ");
                return Ok(LoadedFamily { family, rung, ebpf, fallbacks });
            }
            Err(reason) => reasons.push(format!("{method}: {reason}")),
        }
    }
    Err(reasons.join("; "))
}

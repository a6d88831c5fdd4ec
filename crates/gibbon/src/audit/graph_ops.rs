//! Check 3 of Carlini et al. 2019 (section 5.4, "non-differentiable components"): operations
//! on the input-to-logits path whose gradient is zero, cut or random, read from the model's
//! graph ([`crate::model::scan`]) before any attack runs.
use super::{AuditSubject, Check, Finding, Remedy};
use crate::error::Result;
use crate::model::OpEffect;
use serde_json::json;

/// Fires when the model's graph has an operation with a useless gradient that this view does
/// not already replace by a surrogate. Remedies: BPDA for the ops gibbon can swap, EOT for
/// random ones, gradient-free attacks for the ones it cannot swap. A graph that cannot be read
/// (a remote endpoint) does not fire, and the finding says the check could not look.
pub struct GraphOps;

impl Check for GraphOps {
    fn name(&self) -> &'static str {
        "graph_ops"
    }
    fn question(&self) -> &'static str {
        "does the forward pass contain non-differentiable, gradient-cutting or random operations?"
    }
    fn run(&self, subject: &AuditSubject) -> Result<Finding> {
        let scan = subject.graph_scan();
        let active: Vec<_> = scan.ops.iter().filter(|o| !o.swapped).collect();
        let mut remedies = Vec::new();
        if scan.swappable().next().is_some() {
            remedies.push(Remedy::Bpda);
        }
        if active.iter().any(|o| o.effect == OpEffect::Random) {
            remedies.push(Remedy::Eot);
        }
        if scan.unswappable().any(|o| !o.swapped) {
            remedies.push(Remedy::GradientFree);
        }
        let fired = !active.is_empty();
        let verdict = if fired {
            let names: Vec<String> =
                active.iter().map(|o| format!("{} ({})", o.op, o.location)).collect();
            format!("{} op(s) with useless gradients: {}", active.len(), names.join(", "))
        } else if !scan.inspected {
            format!("not inspected: {}", scan.source)
        } else if scan.ops.is_empty() {
            format!("none found in {}", scan.source)
        } else {
            format!("{} op(s) found, all replaced by surrogates in this view", scan.ops.len())
        };
        Ok(Finding {
            check: self.name(),
            question: self.question(),
            fired,
            verdict,
            evidence: json!({ "scan": scan }),
            remedies: if fired { remedies } else { Vec::new() },
        })
    }
}

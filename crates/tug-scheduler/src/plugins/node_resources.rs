//! NodeResourcesFit: a pod fits where the node's allocatable minus what
//! its pods request covers the pod's requests; among those, the least
//! allocated nodes score highest (LeastAllocated, upstream's default).
//! BalancedAllocation prefers nodes whose CPU and memory stay in balance.

use super::{Cycle, Filter, Fit, MAX_SCORE, Score};
use crate::info::{NodeInfo, PodInfo};

/// How nodes are ranked by what is allocated on them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strategy {
    #[default]
    LeastAllocated,
    MostAllocated,
}

#[derive(Default)]
pub struct NodeResourcesFit {
    pub strategy: Strategy,
}

impl Filter for NodeResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    fn filter(&self, _cycle: &Cycle, pod: &PodInfo, node: &NodeInfo) -> Fit {
        let mut reasons = Vec::new();
        if node.pod_count + 1 > node.allowed_pods {
            reasons.push("Too many pods".to_string());
        }
        let wanted = &pod.requests;
        let free = |allocatable: i64, requested: i64| allocatable - requested;
        if wanted.milli_cpu > 0
            && wanted.milli_cpu > free(node.allocatable.milli_cpu, node.requested.milli_cpu)
        {
            reasons.push("Insufficient cpu".into());
        }
        if wanted.memory > 0 && wanted.memory > free(node.allocatable.memory, node.requested.memory)
        {
            reasons.push("Insufficient memory".into());
        }
        if wanted.ephemeral_storage > 0
            && wanted.ephemeral_storage
                > free(
                    node.allocatable.ephemeral_storage,
                    node.requested.ephemeral_storage,
                )
        {
            reasons.push("Insufficient ephemeral-storage".into());
        }
        for (name, amount) in &wanted.scalar {
            let allocatable = node.allocatable.scalar.get(name).copied().unwrap_or(0);
            let requested = node.requested.scalar.get(name).copied().unwrap_or(0);
            if *amount > 0 && *amount > free(allocatable, requested) {
                reasons.push(format!("Insufficient {name}"));
            }
        }
        if reasons.is_empty() {
            Fit::Fits
        } else {
            Fit::Unschedulable(reasons)
        }
    }
}

fn least_allocated(requested: i64, allocatable: i64) -> i64 {
    if allocatable <= 0 || requested > allocatable {
        return 0;
    }
    (allocatable - requested) * MAX_SCORE / allocatable
}

fn most_allocated(requested: i64, allocatable: i64) -> i64 {
    if allocatable <= 0 {
        return 0;
    }
    requested.min(allocatable) * MAX_SCORE / allocatable
}

/// CPU and memory on the node with the pod added, with the non-zero
/// defaults for what asks nothing: ((cpu, allocatable), (memory, allocatable)).
fn with_pod(pod: &PodInfo, node: &NodeInfo) -> ((i64, i64), (i64, i64)) {
    (
        (
            node.non_zero_requested.0 + pod.non_zero.0,
            node.allocatable.milli_cpu,
        ),
        (
            node.non_zero_requested.1 + pod.non_zero.1,
            node.allocatable.memory,
        ),
    )
}

impl Score for NodeResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    /// CPU and memory, weighted 1 each.
    fn score(&self, _cycle: &Cycle, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let ((cpu, cpu_total), (memory, memory_total)) = with_pod(pod, node);
        let each = match self.strategy {
            Strategy::LeastAllocated => least_allocated,
            Strategy::MostAllocated => most_allocated,
        };
        (each(cpu, cpu_total) + each(memory, memory_total)) / 2
    }
}

pub struct BalancedAllocation;

impl Score for BalancedAllocation {
    fn name(&self) -> &'static str {
        "NodeResourcesBalancedAllocation"
    }

    /// 100 when CPU and memory are equally used, less the further apart
    /// their fractions are (one minus their standard deviation).
    fn score(&self, _cycle: &Cycle, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let ((cpu, cpu_total), (memory, memory_total)) = with_pod(pod, node);
        let fraction = |used: i64, total: i64| {
            if total <= 0 {
                1.0
            } else {
                (used as f64 / total as f64).min(1.0)
            }
        };
        let deviation = (fraction(cpu, cpu_total) - fraction(memory, memory_total)).abs() / 2.0;
        ((1.0 - deviation) * MAX_SCORE as f64) as i64
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::info::PodUsage;
    use crate::plugins::testing::{node, pod};

    fn asking(cpu: &str, memory: &str) -> PodInfo {
        pod(
            json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}),
        )
    }

    #[test]
    fn a_pod_fits_where_its_requests_are_free() {
        let fit = NodeResourcesFit::default();
        let mut n = node("a", json!({}), json!({}));
        let big = asking("3", "1Gi");
        assert_eq!(fit.filter(&Cycle::default(), &big, &n), Fit::Fits);
        n.add_pod(&PodUsage::of(&big, "a"));
        assert_eq!(
            fit.filter(&Cycle::default(), &asking("2", "8Gi"), &n),
            Fit::Unschedulable(vec![
                "Insufficient cpu".into(),
                "Insufficient memory".into()
            ])
        );
        assert_eq!(
            fit.filter(&Cycle::default(), &asking("1", "7Gi"), &n),
            Fit::Fits
        );
        let gpu = pod(
            json!({"containers": [{"name": "c", "resources": {"limits": {"example.com/gpu": "1"}}}]}),
        );
        assert_eq!(
            fit.filter(&Cycle::default(), &gpu, &n),
            Fit::Unschedulable(vec!["Insufficient example.com/gpu".into()])
        );
        n.pod_count = 110;
        assert_eq!(
            fit.filter(&Cycle::default(), &pod(json!({})), &n),
            Fit::Unschedulable(vec!["Too many pods".into()])
        );
    }

    #[test]
    fn least_allocated_prefers_the_emptier_node() {
        let fit = NodeResourcesFit::default();
        let empty = node("a", json!({}), json!({}));
        let mut busy = node("b", json!({}), json!({}));
        busy.add_pod(&PodUsage::of(&asking("2", "4Gi"), "b"));
        let p = asking("1", "2Gi");
        // Empty: cpu (4-1)/4 = 75, memory (8-2)/8 = 75.
        assert_eq!(fit.score(&Cycle::default(), &p, &empty), 75);
        assert_eq!(fit.score(&Cycle::default(), &p, &busy), 25);
        let most = NodeResourcesFit {
            strategy: Strategy::MostAllocated,
        };
        assert_eq!(most.score(&Cycle::default(), &p, &busy), 75);
        // Balanced: cpu 1/4 and memory 2/8 are equal.
        assert_eq!(BalancedAllocation.score(&Cycle::default(), &p, &empty), 100);
        assert_eq!(
            BalancedAllocation.score(&Cycle::default(), &asking("2", "0"), &empty),
            76
        );
    }
}

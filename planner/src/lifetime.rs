//! The lifetime graph: ops as nodes, data dependencies as edges (producer -> consumer, labelled
//! by the tensor), each tensor's first and last use, and the live bytes at every op of the
//! all-on-GPU schedule.

use models::{Bytes, OpId, Program, TensorId};
use petgraph::graph::{DiGraph, NodeIndex};

pub struct LifetimeGraph {
    /// Node i is op i; an edge carries the tensor that flows along it.
    pub graph: DiGraph<OpId, TensorId>,
    /// Per tensor: the first and last op that touches it (None: no op does).
    pub first_use: Vec<Option<OpId>>,
    pub last_use: Vec<Option<OpId>>,
    /// Per op: bytes live while it runs with everything on the GPU (persistent tensors, its own
    /// allocations, everything allocated earlier and not yet freed).
    pub live_bytes: Vec<Bytes>,
    /// Bytes of persistent tensors (live before the first op).
    pub persistent_bytes: Bytes,
}

impl LifetimeGraph {
    pub fn build(program: &Program) -> LifetimeGraph {
        let inv = &program.inventory;
        let n_t = inv.tensors.len();
        let mut graph = DiGraph::with_capacity(program.ops.len(), program.ops.len() * 4);
        let nodes: Vec<NodeIndex> = program.ops.iter().map(|o| graph.add_node(o.id)).collect();
        let mut last_writer: Vec<Option<usize>> = vec![None; n_t];
        let mut first_use = vec![None; n_t];
        let mut last_use = vec![None; n_t];
        let persistent_bytes: Bytes = inv.tensors.iter().filter(|t| t.persistent).map(|t| t.bytes).sum();
        let mut live = persistent_bytes;
        let mut live_bytes = Vec::with_capacity(program.ops.len());
        for (i, op) in program.ops.iter().enumerate() {
            for t in &op.reads {
                if let Some(w) = last_writer[t.index()] {
                    if w != i {
                        graph.update_edge(nodes[w], nodes[i], *t);
                    }
                }
            }
            for t in op.touches() {
                first_use[t.index()].get_or_insert(op.id);
                last_use[t.index()] = Some(op.id);
            }
            for t in op.writes.iter().chain(&op.allocs) {
                last_writer[t.index()] = Some(i);
            }
            live += op.allocs.iter().map(|t| inv.tensor(*t).bytes).sum();
            live_bytes.push(live);
            live -= op.frees.iter().map(|t| inv.tensor(*t).bytes).sum();
        }
        LifetimeGraph { graph, first_use, last_use, live_bytes, persistent_bytes }
    }

    /// The highest live bytes of the all-on-GPU schedule and the op where it is first reached.
    pub fn peak(&self) -> (Bytes, OpId) {
        let (i, b) = self.live_bytes.iter().enumerate().fold((0, Bytes::ZERO), |(bi, bb), (i, b)| if *b > bb { (i, *b) } else { (bi, bb) });
        (b, OpId(i as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use petgraph::algo::is_cyclic_directed;

    fn tiny() -> Program {
        crate::shipped::program("gpt2-tiny")
    }

    #[test]
    fn dependencies_point_forward_in_program_order() {
        let p = tiny();
        let g = LifetimeGraph::build(&p);
        assert!(!is_cyclic_directed(&g.graph));
        for e in g.graph.raw_edges() {
            assert!(g.graph[e.source()] < g.graph[e.target()]);
        }
        // The loss depends (transitively) on the embedding.
        let embed = petgraph::graph::NodeIndex::new(0);
        let loss = p.find(models::OpKind::Loss).unwrap().id;
        assert!(petgraph::algo::has_path_connecting(&g.graph, embed, petgraph::graph::NodeIndex::new(loss.index()), None));
    }

    #[test]
    fn every_tensor_is_used_between_its_alloc_and_free() {
        let p = tiny();
        let g = LifetimeGraph::build(&p);
        // gpt2-tiny has a chunked output layer: logits chunks live twice (forward and backward),
        // so check each lifetime: after a free, the next touch must be a fresh allocation.
        let mut freed = vec![false; p.inventory.tensors.len()];
        for op in &p.ops {
            for t in &op.allocs {
                assert!(g.first_use[t.index()].unwrap() <= op.id);
                freed[t.index()] = false;
            }
            for t in op.touches() {
                assert!(!freed[t.index()], "{} touched after its free by {}", p.inventory.tensor(t).name, op.name);
            }
            for t in &op.frees {
                freed[t.index()] = true;
            }
        }
        for (i, t) in p.inventory.tensors.iter().enumerate() {
            if !t.persistent {
                assert!(freed[i], "{} is freed by the end", t.name);
                assert!(g.last_use[i].is_some());
            }
        }
    }

    #[test]
    fn peak_is_at_the_turn_from_forward_to_backward() {
        let p = tiny();
        let g = LifetimeGraph::build(&p);
        let (peak, at) = g.peak();
        assert!(peak > g.persistent_bytes);
        let phase = p.op(at).phase;
        assert!(matches!(phase, models::program::Phase::Head | models::program::Phase::Backward), "{phase:?}");
    }
}

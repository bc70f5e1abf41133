//! The inventory digest a schedule carries: a schedule planned for one program is refused by
//! another (DESIGN.md invariant 5).

use crate::program::{Op, Program};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// What of an op a schedule depends on: what it is and the tensors it touches. Its FLOPs,
/// traffic and launches are the cost model's, which may price the same program better without
/// making its schedules wrong.
#[derive(Serialize)]
struct OpStructure<'a> {
    id: crate::OpId,
    name: &'a str,
    kind: crate::OpKind,
    phase: crate::program::Phase,
    reads: &'a [crate::TensorId],
    writes: &'a [crate::TensorId],
    allocs: &'a [crate::TensorId],
    frees: &'a [crate::TensorId],
}

impl<'a> From<&'a Op> for OpStructure<'a> {
    fn from(o: &'a Op) -> Self {
        OpStructure {
            id: o.id,
            name: &o.name,
            kind: o.kind,
            phase: o.phase,
            reads: &o.reads,
            writes: &o.writes,
            allocs: &o.allocs,
            frees: &o.frees,
        }
    }
}

/// Hex SHA-256 (first 16 bytes) over the program's inventory and the structure of its ops,
/// serialised canonically.
pub fn program_digest(program: &Program) -> String {
    let mut h = Sha256::new();
    // serde_json of these plain structs is deterministic (no maps).
    h.update(serde_json::to_vec(&program.inventory.tensors).expect("inventory serialises"));
    let ops: Vec<OpStructure> = program.ops.iter().map(OpStructure::from).collect();
    h.update(serde_json::to_vec(&ops).expect("ops serialise"));
    let out = h.finalize();
    out[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GptConfig;

    #[test]
    fn the_digest_follows_structure_not_costs() {
        let cfg = GptConfig::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/gpt2-tiny.ron")).unwrap();
        let p = Program::build(&cfg);
        let d = program_digest(&p);
        let mut priced = p.clone();
        priced.ops[3].bytes = crate::Bytes(priced.ops[3].bytes.0 + 1);
        priced.ops[3].launches += 1;
        assert_eq!(program_digest(&priced), d, "costs are not structure");
        let mut other = p.clone();
        other.ops[3].reads.pop();
        assert_ne!(program_digest(&other), d, "the tensors an op reads are");
        assert_ne!(program_digest(&Program::build(&cfg.with_shape(Some(2), None, None).unwrap())), d);
    }
}

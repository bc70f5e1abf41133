//! The inventory digest a schedule carries: a schedule planned for one program is refused by
//! another (DESIGN.md invariant 5).

use crate::program::Program;
use sha2::{Digest, Sha256};

/// Hex SHA-256 (first 16 bytes) over the program's ops and inventory, serialised canonically.
pub fn program_digest(program: &Program) -> String {
    let mut h = Sha256::new();
    // serde_json of these plain structs is deterministic (no maps).
    h.update(serde_json::to_vec(&program.inventory.tensors).expect("inventory serialises"));
    h.update(serde_json::to_vec(&program.ops).expect("ops serialise"));
    let out = h.finalize();
    out[..16].iter().map(|b| format!("{b:02x}")).collect()
}

//! Lists of indices (layers, output chunks) said as runs of consecutive numbers, which every
//! output that names many layers writes as ranges ("0-3, 7").

/// The runs of consecutive numbers in `indices` (sorted and deduplicated first), as inclusive
/// (first, last) pairs: `[3, 0, 1, 2, 7, 9, 10]` -> `[(0, 3), (7, 7), (9, 10)]`.
pub fn consecutive(indices: &[u32]) -> Vec<(u32, u32)> {
    let mut v = indices.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for x in v {
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == x => *last = x,
            _ => runs.push((x, x)),
        }
    }
    runs
}

/// The runs joined by `separator`, each `first{dash}last` (a single number alone).
pub fn ranges(indices: &[u32], dash: &str, separator: &str) -> String {
    consecutive(indices)
        .iter()
        .map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}{dash}{b}") })
        .collect::<Vec<_>>()
        .join(separator)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_consecutive_numbers() {
        assert_eq!(consecutive(&[3, 0, 1, 2, 7, 9, 10, 9]), [(0, 3), (7, 7), (9, 10)]);
        assert!(consecutive(&[]).is_empty());
        assert_eq!(ranges(&[0, 1, 2, 5, 7, 8], "-", ", "), "0-2, 5, 7-8");
        assert_eq!(ranges(&[4], "-", ","), "4");
    }
}

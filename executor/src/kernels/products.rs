//! The cuBLASLt products: a layout in cuBLAS's column-major terms, and a product with its
//! operands, each checked and narrowed to what the layout spans.

use super::{LaunchError, Region};
use models::config::DType;
use serde::Serialize;

type Result<T> = std::result::Result<T, LaunchError>;

/// Element type of a product's C and D (A and B are bf16).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum MatType {
    Bf16,
    F32,
}

impl MatType {
    pub fn dtype(self) -> DType {
        match self {
            MatType::Bf16 => DType::Bf16,
            MatType::F32 => DType::F32,
        }
    }
    pub fn size(self) -> u64 {
        self.dtype().size()
    }
}

/// A product's layout in cuBLAS's column-major terms: `D (m x n) = op(A) op(B) [+ C]`, A and B
/// bf16, C and D of `out` type, fp32 accumulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct GemmLayout {
    pub m: u64,
    pub n: u64,
    pub k: u64,
    pub trans_a: bool,
    pub trans_b: bool,
    pub lda: i64,
    pub ldb: i64,
    pub ldd: i64,
    pub out: MatType,
}

impl GemmLayout {
    /// The step's linear layer: out (rows, o) = inp (rows, i) W^T (W: (o, i) row-major).
    pub fn linear(rows: u64, i: u64, o: u64) -> GemmLayout {
        GemmLayout { m: o, n: rows, k: i, trans_a: true, trans_b: false, lda: i as i64, ldb: i as i64, ldd: o as i64, out: MatType::Bf16 }
    }

    /// The input gradient: dx (rows, i) = dy (rows, o) W (W: (o, i)); dx of type `out`.
    pub fn dx(rows: u64, i: u64, o: u64, out: MatType) -> GemmLayout {
        GemmLayout { m: i, n: rows, k: o, trans_a: false, trans_b: false, lda: i as i64, ldb: o as i64, ldd: i as i64, out }
    }

    /// The weight gradient: dW (o, i) = dy^T (o, rows) x (rows, i).
    pub fn dw(rows: u64, i: u64, o: u64) -> GemmLayout {
        GemmLayout { m: i, n: o, k: rows, trans_a: false, trans_b: true, lda: i as i64, ldb: o as i64, ldd: i as i64, out: MatType::Bf16 }
    }

    /// FLOPs of one call.
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }

    /// Elements of A as its layout spans them (column-major, leading dimension lda).
    pub fn a_elems(&self) -> u64 {
        let cols = if self.trans_a { self.m } else { self.k };
        self.lda as u64 * cols
    }

    pub fn b_elems(&self) -> u64 {
        let cols = if self.trans_b { self.k } else { self.n };
        self.ldb as u64 * cols
    }

    /// Elements of D (and of C).
    pub fn d_elems(&self) -> u64 {
        self.ldd as u64 * self.n
    }

    pub fn d_bytes(&self) -> u64 {
        self.d_elems() * self.out.size()
    }
}

/// One product with its operands: `c` (when given) is added with beta = 1 and may be `d`
/// itself; `bias` is a bf16 vector of m added to every column.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Product<B> {
    pub layout: GemmLayout,
    pub a: Region<B>,
    pub b: Region<B>,
    pub c: Option<Region<B>>,
    pub d: Region<B>,
    pub bias: Option<Region<B>>,
}

impl<B: Copy> Product<B> {
    /// Checks every operand against the layout and narrows it to what the product touches.
    pub fn new(
        layout: GemmLayout,
        a: Region<B>,
        b: Region<B>,
        c: Option<Region<B>>,
        d: Region<B>,
        bias: Option<Region<B>>,
    ) -> Result<Product<B>> {
        let what = || format!("product {}x{}x{}", layout.m, layout.n, layout.k);
        let out = layout.out.dtype();
        Ok(Product {
            layout,
            a: a.take(&what, "A", DType::Bf16, layout.a_elems())?,
            b: b.take(&what, "B", DType::Bf16, layout.b_elems())?,
            c: c.map(|c| c.take(&what, "C", out, layout.d_elems())).transpose()?,
            d: d.take(&what, "D", out, layout.d_elems())?,
            bias: bias.map(|x| x.take(&what, "bias", DType::Bf16, layout.m)).transpose()?,
        })
    }

    /// The operands that are buffers, with their names.
    pub fn regions(&self) -> impl Iterator<Item = (&'static str, Region<B>)> + '_ {
        [("A", Some(self.a)), ("B", Some(self.b)), ("C", self.c), ("D", Some(self.d)), ("bias", self.bias)]
            .into_iter()
            .filter_map(|(n, r)| r.map(|r| (n, r)))
    }
}

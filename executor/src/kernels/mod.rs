//! The kernels of `executor/kernels` and how each is launched, written once: its parameters (the
//! contract of `executor/kernels/README.md`), its grid, block and dynamic shared memory, and how
//! many elements of each buffer it reads or writes. The step ([`crate::ops`]) and calibrate both
//! build their launches here; [`crate::gpu`] runs them.
//!
//! Plain Rust (no CUDA, no `unsafe`): a launch is a value, [`Launch`], whose buffer arguments are
//! [`Region`]s of buffers of any kind `B` (the inventory's tensors for the step, device buffers
//! for calibrate). Each launcher checks that every region holds the elements of the type the
//! kernel touches and narrows it to exactly those bytes, so the GPU side only has to check that
//! each region lies inside a live buffer. The cuBLASLt products are described the same way
//! ([`GemmLayout`], [`Product`]).

use models::config::{Attention, DType, GptConfig};

/// The kernel sources, carried in the binary.
pub const KERNEL_SOURCES: &[(&str, &str)] = &[
    ("encoder.cu", include_str!("../../kernels/encoder.cu")),
    ("layernorm.cu", include_str!("../../kernels/layernorm.cu")),
    ("bias.cu", include_str!("../../kernels/bias.cu")),
    ("gelu.cu", include_str!("../../kernels/gelu.cu")),
    ("crossentropy.cu", include_str!("../../kernels/crossentropy.cu")),
    ("adamw.cu", include_str!("../../kernels/adamw.cu")),
    ("grad_norm.cu", include_str!("../../kernels/grad_norm.cu")),
    ("misc.cu", include_str!("../../kernels/misc.cu")),
    ("init.cu", include_str!("../../kernels/init.cu")),
    ("attention.cu", include_str!("../../kernels/attention.cu")),
    ("attention_materialized.cu", include_str!("../../kernels/attention_materialized.cu")),
];

/// Row splits of the column reductions (colsum, layer-norm dw/db): `S * n * 4` bytes of the
/// workspace (twice that for the layer norm's two sums).
pub const SPLITS: u32 = 32;

/// Head sizes the fused attention has kernels for.
pub const FUSED_HEAD_SIZES: [u32; 5] = [32, 64, 80, 96, 128];

/// Largest head size of the materialised attention.
pub const MATERIALIZED_MAX_HEAD: u32 = 256;

/// Dynamic shared memory a kernel may use without raising its limit.
const DEFAULT_SMEM_LIMIT: u32 = 48 * 1024;

pub(crate) fn cdiv(a: u64, b: u64) -> u32 {
    a.div_ceil(b) as u32
}

/// Every kernel the executor launches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    EmbeddingForward,
    EmbeddingBackwardWpe,
    EmbeddingBackwardWte,
    LayernormForward,
    LayernormBackwardDx,
    LayernormBackwardDxF32dy,
    LayernormBackwardDwdbPartial,
    LayernormBackwardDwdbPartialF32dy,
    LayernormBackwardDwdbReduce,
    ColsumPartial,
    ColsumReduce,
    GeluForward,
    GeluBackward,
    CeStatsUpdate,
    CeLoss,
    CeBackward,
    AdamwUpdate,
    /// `adamw_update` with the gradient times the clip scale (a clipped step).
    AdamwUpdateClipped,
    /// Partial sums of squares of one owner's gradient (a clipped step's `GradNorm`).
    GradNormPartials,
    FillBf16,
    /// A debug delay on a stream (the slowed-lane runs): `ns` of the GPU's timer.
    SpinNs,
    /// Initial weights and their fp32 master copy (`init.cu`).
    InitParams,
    AttentionBackwardDelta,
    /// `flash_attention_forward_d{D}`, D the head size.
    FlashForward(u32),
    /// `flash_attention_backward_d{D}`.
    FlashBackward(u32),
    MaterializedForward,
    MaterializedBackwardDq,
    MaterializedBackwardDkdv,
}

/// One parameter of a kernel, as the contract types it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Param {
    /// A device pointer to elements of this type.
    Ptr(DType),
    I32,
    I64,
    F32,
}

impl Kernel {
    /// The kernels every step launches, whatever its attention (with those of a step clipped by
    /// the global norm: they are small, and loading them always keeps one set per config).
    pub const COMMON: [Kernel; 22] = [
        Kernel::EmbeddingForward,
        Kernel::EmbeddingBackwardWpe,
        Kernel::EmbeddingBackwardWte,
        Kernel::LayernormForward,
        Kernel::LayernormBackwardDx,
        Kernel::LayernormBackwardDxF32dy,
        Kernel::LayernormBackwardDwdbPartial,
        Kernel::LayernormBackwardDwdbPartialF32dy,
        Kernel::LayernormBackwardDwdbReduce,
        Kernel::ColsumPartial,
        Kernel::ColsumReduce,
        Kernel::GeluForward,
        Kernel::GeluBackward,
        Kernel::CeStatsUpdate,
        Kernel::CeLoss,
        Kernel::CeBackward,
        Kernel::AdamwUpdate,
        Kernel::AdamwUpdateClipped,
        Kernel::GradNormPartials,
        Kernel::FillBf16,
        Kernel::SpinNs,
        Kernel::InitParams,
    ];

    /// The attention's kernels, in the order a step launches them.
    pub fn attention(kind: Attention, head_size: u32) -> [Kernel; 3] {
        match kind {
            Attention::Fused => [Kernel::AttentionBackwardDelta, Kernel::FlashForward(head_size), Kernel::FlashBackward(head_size)],
            Attention::Materialized => [Kernel::MaterializedForward, Kernel::MaterializedBackwardDq, Kernel::MaterializedBackwardDkdv],
        }
    }

    /// Number of distinct slots (a flash kernel of any head size is one slot).
    pub const SLOTS: usize = 28;

    /// A dense index, for tables of compiled functions: the common kernels first, then the
    /// fused attention's, then the materialised attention's.
    pub fn slot(self) -> usize {
        let same = |k: &Kernel| std::mem::discriminant(k) == std::mem::discriminant(&self);
        let n = Kernel::COMMON.len();
        let fused = Kernel::attention(Attention::Fused, 0);
        let materialized = Kernel::attention(Attention::Materialized, 0);
        (Kernel::COMMON.iter().position(same))
            .or_else(|| fused.iter().position(same).map(|i| n + i))
            .or_else(|| materialized.iter().position(same).map(|i| n + fused.len() + i))
            .expect("every kernel is listed")
    }

    /// The `.cu` file that defines it.
    pub fn file(self) -> &'static str {
        use Kernel::*;
        match self {
            EmbeddingForward | EmbeddingBackwardWpe | EmbeddingBackwardWte => "encoder.cu",
            LayernormForward
            | LayernormBackwardDx
            | LayernormBackwardDxF32dy
            | LayernormBackwardDwdbPartial
            | LayernormBackwardDwdbPartialF32dy
            | LayernormBackwardDwdbReduce => "layernorm.cu",
            ColsumPartial | ColsumReduce => "bias.cu",
            GeluForward | GeluBackward => "gelu.cu",
            CeStatsUpdate | CeLoss | CeBackward => "crossentropy.cu",
            AdamwUpdate | AdamwUpdateClipped => "adamw.cu",
            GradNormPartials => "grad_norm.cu",
            FillBf16 | SpinNs => "misc.cu",
            InitParams => "init.cu",
            AttentionBackwardDelta | FlashForward(_) | FlashBackward(_) => "attention.cu",
            MaterializedForward | MaterializedBackwardDq | MaterializedBackwardDkdv => "attention_materialized.cu",
        }
    }

    /// Its `extern "C"` name.
    pub fn name(self) -> String {
        use Kernel::*;
        match self {
            EmbeddingForward => "embedding_forward".into(),
            EmbeddingBackwardWpe => "embedding_backward_wpe".into(),
            EmbeddingBackwardWte => "embedding_backward_wte".into(),
            LayernormForward => "layernorm_forward".into(),
            LayernormBackwardDx => "layernorm_backward_dx".into(),
            LayernormBackwardDxF32dy => "layernorm_backward_dx_f32dy".into(),
            LayernormBackwardDwdbPartial => "layernorm_backward_dwdb_partial".into(),
            LayernormBackwardDwdbPartialF32dy => "layernorm_backward_dwdb_partial_f32dy".into(),
            LayernormBackwardDwdbReduce => "layernorm_backward_dwdb_reduce".into(),
            ColsumPartial => "colsum_partial".into(),
            ColsumReduce => "colsum_reduce".into(),
            GeluForward => "gelu_forward".into(),
            GeluBackward => "gelu_backward".into(),
            CeStatsUpdate => "ce_stats_update".into(),
            CeLoss => "ce_loss".into(),
            CeBackward => "ce_backward".into(),
            AdamwUpdate => "adamw_update".into(),
            AdamwUpdateClipped => "adamw_update_clipped".into(),
            GradNormPartials => "grad_norm_partials".into(),
            FillBf16 => "fill_bf16".into(),
            SpinNs => "spin_ns".into(),
            InitParams => "init_params".into(),
            AttentionBackwardDelta => "attention_backward_delta".into(),
            FlashForward(d) => format!("flash_attention_forward_d{d}"),
            FlashBackward(d) => format!("flash_attention_backward_d{d}"),
            MaterializedForward => "attention_materialized_forward".into(),
            MaterializedBackwardDq => "attention_materialized_backward_dq".into(),
            MaterializedBackwardDkdv => "attention_materialized_backward_dkdv".into(),
        }
    }

    /// Its parameters in order (the README's table).
    pub fn params(self) -> &'static [Param] {
        use DType::{Bf16 as B, F32 as F, I32 as I};
        use Kernel::*;
        use Param::{Ptr, F32, I32, I64};
        match self {
            EmbeddingForward => &[Ptr(B), Ptr(I), Ptr(B), I32, I32, Ptr(B), I32, I32, I32],
            EmbeddingBackwardWpe => &[Ptr(B), Ptr(B), I32, I32, I32, I32],
            EmbeddingBackwardWte => &[Ptr(B), Ptr(B), Ptr(I), I32, I32, I32, I32],
            LayernormForward => &[Ptr(B), Ptr(F), Ptr(F), Ptr(B), Ptr(B), Ptr(B), I32, I32],
            LayernormBackwardDx => &[Ptr(B), Ptr(B), Ptr(B), Ptr(F), Ptr(F), Ptr(B), I32, I32, I32],
            LayernormBackwardDxF32dy => &[Ptr(B), Ptr(F), Ptr(B), Ptr(F), Ptr(F), Ptr(B), I32, I32, I32],
            LayernormBackwardDwdbPartial => &[Ptr(F), Ptr(B), Ptr(B), Ptr(F), Ptr(F), I32, I32],
            LayernormBackwardDwdbPartialF32dy => &[Ptr(F), Ptr(F), Ptr(B), Ptr(F), Ptr(F), I32, I32],
            LayernormBackwardDwdbReduce => &[Ptr(B), Ptr(B), Ptr(F), I32, I32],
            ColsumPartial => &[Ptr(F), Ptr(B), I32, I32],
            ColsumReduce => &[Ptr(B), Ptr(F), I32, I32, I32],
            GeluForward | GeluBackward => &[Ptr(B), Ptr(B), I64],
            CeStatsUpdate => &[Ptr(F), Ptr(B), Ptr(I), I32, I32, I32, I32, I32],
            CeLoss => &[Ptr(F), Ptr(F), I32],
            CeBackward => &[Ptr(B), Ptr(F), Ptr(I), I32, I32, I32, I32, F32],
            AdamwUpdate => &[Ptr(B), Ptr(F), Ptr(F), Ptr(F), Ptr(B), I64, F32, F32, F32, F32, F32, F32, F32, F32],
            AdamwUpdateClipped => &[Ptr(B), Ptr(F), Ptr(F), Ptr(F), Ptr(B), I64, F32, F32, F32, F32, F32, F32, F32, F32, Ptr(F)],
            GradNormPartials => &[Ptr(B), I64, Ptr(F)],
            FillBf16 => &[Ptr(B), I64, F32],
            SpinNs => &[I64],
            InitParams => &[Ptr(B), Ptr(F), I64, I64, I64, F32, F32],
            AttentionBackwardDelta => &[Ptr(F), Ptr(B), Ptr(B), I32, I32, I32, I32],
            FlashForward(_) => &[Ptr(B), Ptr(F), Ptr(B), I32, I32, I32, F32],
            FlashBackward(_) => &[Ptr(B), Ptr(B), Ptr(B), Ptr(F), Ptr(F), I32, I32, I32, F32],
            MaterializedForward => &[Ptr(B), Ptr(B), Ptr(B), I32, I32, I32, I32, F32],
            MaterializedBackwardDq | MaterializedBackwardDkdv => &[Ptr(B), Ptr(B), Ptr(B), Ptr(B), Ptr(B), I32, I32, I32, I32, F32],
        }
    }
}
/// Flash-attention forward warps per block (the contract: 8 for D = 128, else 4).
pub fn fwd_warps(d: u32) -> u32 {
    if d == 128 {
        8
    } else {
        4
    }
}

/// Dynamic shared memory of the flash forward: (16*NW + 256) * (D + 8) * 2 bytes.
pub fn fwd_smem(d: u32) -> u32 {
    (16 * fwd_warps(d) + 256) * (d + 8) * 2
}

/// Dynamic shared memory of the flash backward: 512 * (D + 8) + 512 bytes.
pub fn bwd_smem(d: u32) -> u32 {
    512 * (d + 8) + 512
}

/// Dynamic shared memory of the materialised attention forward and `_dq`: T * 4 bytes.
pub fn materialized_smem(t: u32) -> u32 {
    t * 4
}

/// The kernels one config's step launches, and the set-up they need once after loading.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelSet {
    /// In the order they are loaded.
    pub kernels: Vec<Kernel>,
    /// Kernels whose dynamic shared memory limit must be raised, with the limit.
    pub smem_limits: Vec<(Kernel, u32)>,
}

impl KernelSet {
    /// Every kernel a step of `cfg` launches. Refuses a head size the attention has no kernel for.
    pub fn for_config(cfg: &GptConfig) -> std::result::Result<KernelSet, String> {
        use Kernel::*;
        let d = cfg.hidden / cfg.heads;
        let mut kernels = Kernel::COMMON.to_vec();
        let mut smem_limits = Vec::new();
        match cfg.attention {
            Attention::Fused => {
                if !FUSED_HEAD_SIZES.contains(&d) {
                    return Err(format!("fused attention has kernels for head sizes 32, 64, 80, 96, 128; this config has {d}"));
                }
                kernels.extend(Kernel::attention(cfg.attention, d));
                smem_limits.extend([(FlashForward(d), fwd_smem(d)), (FlashBackward(d), bwd_smem(d))]);
            }
            Attention::Materialized => {
                if d > MATERIALIZED_MAX_HEAD {
                    return Err(format!("materialised attention supports head sizes up to 256; this config has {d}"));
                }
                kernels.extend(Kernel::attention(cfg.attention, d));
                let smem = materialized_smem(cfg.seq);
                if smem > DEFAULT_SMEM_LIMIT {
                    smem_limits.extend([(MaterializedForward, smem), (MaterializedBackwardDq, smem)]);
                }
            }
        }
        Ok(KernelSet { kernels, smem_limits })
    }
}

/// Why a launch or product cannot be made from its arguments.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum LaunchError {
    #[error("{what}: {arg} holds {have} {dtype:?} elements, the kernel touches {need}")]
    TooSmall { what: String, arg: &'static str, dtype: DType, need: u64, have: u64 },
    #[error("{what}: {arg} holds {got:?} elements, the kernel takes {want:?}")]
    WrongType { what: String, arg: &'static str, got: DType, want: DType },
    #[error("elements {first}..{first}+{count} are outside a region of {elems}")]
    Outside { first: u64, count: u64, elems: u64 },
    #[error("the embedding has no {0} view")]
    NoView(&'static str),
    #[error("{0}: no GPU launch")]
    NotOnGpu(String),
}

type Result<T> = std::result::Result<T, LaunchError>;

/// Bytes of a buffer `B` holding elements of `dtype`: a tensor, a view of a parameter tensor,
/// a device buffer or part of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region<B> {
    pub buf: B,
    /// From the start of the buffer.
    pub offset: u64,
    pub bytes: u64,
    pub dtype: DType,
}

impl<B: Copy> Region<B> {
    /// All `bytes` of `buf`.
    pub fn whole(buf: B, bytes: u64, dtype: DType) -> Region<B> {
        Region { buf, offset: 0, bytes, dtype }
    }

    pub fn elems(&self) -> u64 {
        self.bytes / self.dtype.size()
    }

    /// `count` elements from element `first`.
    pub fn slice(&self, first: u64, count: u64) -> Result<Region<B>> {
        if first.checked_add(count).is_none_or(|end| end > self.elems()) {
            return Err(LaunchError::Outside { first, count, elems: self.elems() });
        }
        let size = self.dtype.size();
        Ok(Region { offset: self.offset + first * size, bytes: count * size, ..*self })
    }

    /// The same bytes as elements of `dtype` (scratch memory used as another type).
    pub fn as_type(&self, dtype: DType) -> Region<B> {
        Region { dtype, ..*self }
    }

    /// The first `need` elements, which must be of type `want`: what one argument touches.
    fn take(&self, what: &dyn Fn() -> String, arg: &'static str, want: DType, need: u64) -> Result<Region<B>> {
        if self.dtype != want {
            return Err(LaunchError::WrongType { what: what(), arg, got: self.dtype, want });
        }
        if need > self.elems() {
            return Err(LaunchError::TooSmall { what: what(), arg, dtype: want, need, have: self.elems() });
        }
        Ok(Region { bytes: need * want.size(), ..*self })
    }
}

/// One kernel argument, passed by value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arg<B> {
    Buf(Region<B>),
    I32(i32),
    I64(i64),
    F32(f32),
}

impl<B> Arg<B> {
    /// Whether the argument has the type of `p`.
    pub fn fits(&self, p: Param) -> bool {
        match (self, p) {
            (Arg::Buf(r), Param::Ptr(t)) => r.dtype == t,
            (Arg::I32(_), Param::I32) | (Arg::I64(_), Param::I64) | (Arg::F32(_), Param::F32) => true,
            _ => false,
        }
    }
}

/// One kernel launch: the kernel, its geometry and its arguments in the kernel's order.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch<B> {
    pub kernel: Kernel,
    pub grid: (u32, u32, u32),
    pub block: u32,
    /// Dynamic shared memory, bytes.
    pub smem: u32,
    pub args: Vec<Arg<B>>,
}

impl<B> Launch<B> {
    /// Checks the arguments against the kernel's parameters (count and types) and that the grid
    /// is not empty.
    pub fn check(&self) -> std::result::Result<(), String> {
        let params = self.kernel.params();
        if self.args.len() != params.len() || self.args.iter().zip(params).any(|(a, p)| !a.fits(*p)) {
            return Err(format!("{}: arguments do not match the kernel's parameters", self.kernel.name()));
        }
        let (x, y, z) = self.grid;
        if x == 0 || y == 0 || z == 0 {
            return Err(format!("{}: empty grid {:?}", self.kernel.name(), self.grid));
        }
        Ok(())
    }
}
/// Builds a launch's argument list, checking and narrowing each region.
pub(crate) struct Args<B> {
    kernel: Kernel,
    args: Vec<Arg<B>>,
}

impl<B: Copy> Args<B> {
    fn new(kernel: Kernel) -> Args<B> {
        Args { kernel, args: Vec::with_capacity(kernel.params().len()) }
    }
    fn buf(mut self, arg: &'static str, r: Region<B>, dtype: DType, elems: u64) -> Result<Args<B>> {
        let kernel = self.kernel;
        self.args.push(Arg::Buf(r.take(&|| kernel.name(), arg, dtype, elems)?));
        Ok(self)
    }
    fn bf16(self, arg: &'static str, r: Region<B>, elems: u64) -> Result<Args<B>> {
        self.buf(arg, r, DType::Bf16, elems)
    }
    fn f32(self, arg: &'static str, r: Region<B>, elems: u64) -> Result<Args<B>> {
        self.buf(arg, r, DType::F32, elems)
    }
    fn i32s(self, arg: &'static str, r: Region<B>, elems: u64) -> Result<Args<B>> {
        self.buf(arg, r, DType::I32, elems)
    }
    fn int(mut self, x: u64) -> Args<B> {
        self.args.push(Arg::I32(x as i32));
        self
    }
    fn long(mut self, x: u64) -> Args<B> {
        self.args.push(Arg::I64(x as i64));
        self
    }
    fn float(mut self, x: f32) -> Args<B> {
        self.args.push(Arg::F32(x));
        self
    }
    fn launch(self, grid: (u32, u32, u32), block: u32, smem: u32) -> Launch<B> {
        Launch { kernel: self.kernel, grid, block, smem, args: self.args }
    }
}
pub mod launchers;
mod products;

pub use launchers::*;
pub use products::{GemmLayout, MatType, Product};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_has_a_slot_of_its_own() {
        let mut all = Kernel::COMMON.to_vec();
        all.extend(Kernel::attention(Attention::Fused, 64));
        all.extend(Kernel::attention(Attention::Materialized, 64));
        let mut slots: Vec<usize> = all.iter().map(|k| k.slot()).collect();
        slots.sort_unstable();
        assert_eq!(slots, (0..Kernel::SLOTS).collect::<Vec<_>>());
        // every name is in its file, as the kernel sources define it
        for k in all {
            let src = KERNEL_SOURCES.iter().find(|(f, _)| *f == k.file()).expect("a kernel file").1;
            let name = k.name();
            let stem = name.strip_suffix("_d64").unwrap_or(&name);
            assert!(src.contains(stem), "{name} in {}", k.file());
        }
    }

    #[test]
    fn shared_memory_as_the_contract_says() {
        assert_eq!((fwd_smem(64), fwd_smem(128)), (46080, 104448));
        assert_eq!((bwd_smem(64), bwd_smem(128)), (37376, 70144));
    }

    #[test]
    fn regions_are_checked_and_narrowed() {
        let r = Region::whole(7u32, 4096, DType::F32);
        assert_eq!(r.elems(), 1024);
        let s = r.slice(1000, 24).unwrap();
        assert_eq!((s.offset, s.bytes), (4000, 96));
        assert!(r.slice(1000, 25).is_err());
        let l =
            GeluForward { out: Region::whole(1u32, 64, DType::Bf16), inp: Region::whole(2u32, 64, DType::Bf16), n: 32 }.launch().unwrap();
        assert_eq!((l.grid, l.block, l.smem), ((1, 1, 1), 256, 0));
        l.check().unwrap();
        let short = GeluForward { out: Region::whole(1u32, 62, DType::Bf16), inp: Region::whole(2u32, 64, DType::Bf16), n: 32 }.launch();
        assert!(matches!(short, Err(LaunchError::TooSmall { need: 32, have: 31, .. })), "{short:?}");
        let f32s = GeluForward { out: Region::whole(1u32, 128, DType::F32), inp: Region::whole(2u32, 64, DType::Bf16), n: 32 }.launch();
        assert!(matches!(f32s, Err(LaunchError::WrongType { .. })), "{f32s:?}");
    }

    #[test]
    fn clipping_launches_as_the_contract_says() {
        use models::inventory::GRAD_NORM_WORDS;
        let bf = |buf: u32, elems: u64| Region::whole(buf, 2 * elems, DType::Bf16);
        let f = |buf: u32, elems: u64| Region::whole(buf, 4 * elems, DType::F32);
        // grad_norm_partials: fixed 256 x 256 for any n (0 too), the partials and checksums
        // narrowed to 512 words
        for n in [0u64, 1, 1000, 3 << 31] {
            let l = GradNormPartials { grads: bf(1, n), partials: f(2, 600), n }.launch().unwrap();
            assert_eq!((l.kernel, l.grid, l.block, l.smem), (Kernel::GradNormPartials, (256, 1, 1), 256, 0));
            l.check().unwrap();
            assert!(matches!(l.args[1], Arg::I64(x) if x as u64 == n));
            assert!(matches!(l.args[2], Arg::Buf(r) if r.bytes == 4 * GRAD_NORM_WORDS));
        }
        let short = GradNormPartials { grads: bf(1, 10), partials: f(2, 511), n: 10 }.launch();
        assert!(matches!(short, Err(LaunchError::TooSmall { need: 512, have: 511, .. })), "{short:?}");
        let short = GradNormPartials { grads: bf(1, 9), partials: f(2, 512), n: 10 }.launch();
        assert!(matches!(short, Err(LaunchError::TooSmall { need: 10, have: 9, .. })), "{short:?}");

        // AdamW: no scale, today's kernel; a scale, the clipped kernel with it last
        let n = 1000;
        let adam = |scale: Option<Region<u32>>| {
            AdamwUpdate {
                weights: bf(1, n),
                master: f(2, n),
                m: f(3, n),
                v: f(4, n),
                grads: bf(5, n),
                n,
                scalars: AdamwScalars::new(3e-4, 0.9, 0.95, 1e-8, 0.1, 1),
                scale,
            }
            .launch()
        };
        let plain = adam(None).unwrap();
        plain.check().unwrap();
        assert_eq!((plain.kernel, plain.args.len()), (Kernel::AdamwUpdate, 14));
        let clipped = adam(Some(f(6, 4))).unwrap();
        clipped.check().unwrap();
        assert_eq!((clipped.kernel, clipped.grid, clipped.block), (Kernel::AdamwUpdateClipped, plain.grid, plain.block));
        assert_eq!(clipped.args[..14], plain.args[..]);
        assert!(matches!(clipped.args[14], Arg::Buf(r) if r.buf == 6 && r.bytes == 4 && r.dtype == DType::F32));
        assert!(matches!(adam(Some(bf(6, 4))), Err(LaunchError::WrongType { .. })));
        assert!(matches!(adam(Some(f(6, 0))), Err(LaunchError::TooSmall { .. })));
    }
}

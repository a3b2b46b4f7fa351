//! Singular-value summaries of one weight matrix: σ₁, the mean and the population variance
//! of all r = min(m, n) singular values.
//!
//! **Exact** (`SvdMode::Exact`): eigenvalues of the Gram matrix of the smaller side,
//! `G = A Aᵀ` (one symmetric rank-k update, then a symmetric tridiagonal eigensolver), and
//! σᵢ = √λᵢ. This costs about half a bidiagonal SVD. Its one weakness is singular values far
//! below σ₁, which the Gram matrix resolves only to about √ε·σ₁; so the engine bounds the
//! resulting error on Σσ a posteriori and, when that bound exceeds [`GRAM_TOLERANCE`] of
//! Σσ (rank-deficient or very ill-conditioned matrices), recomputes the singular values with
//! faer's bidiagonal SVD. Exact mode therefore agrees with LAPACK's SVD to ~1e-9 relative
//! on every statistic.
//!
//! **Auto** (`SvdMode::Auto`): exact when the smaller side is at most `exact_max_dim`;
//! above it, whichever path [`prefers_randomized`] predicts cheaper from a flop-count cost
//! model (documented, with its calibration, in docs/metrics.md).
//!
//! **Randomized** (`SvdMode::Randomized`, or `Auto` when cheaper): a
//! Halko–Martinsson–Tropp sketch with oversampling p and q power iterations, keeping every
//! iterate (randomized block Krylov, Musco & Musco 2015), gives the top-k singular values
//! by Rayleigh–Ritz: σ₁ and the head Σ_{i≤k} σᵢ. The mean needs Σσ over *all* r singular
//! values, so the tail tr(P √G P), with P the projector off the top-k Ritz vectors, is
//! estimated as in Hutch++ (Meyer et al., 2021): Hutchinson's estimator with Rademacher
//! probes projected by P, each quadratic form by Lanczos (Gauss) quadrature, with xᵀ G x as
//! a control variate whose mean tr(P G P) = ‖A‖²_F − Σθᵢ is known exactly. The variance
//! uses the exact Σσ² = ‖A‖²_F, so its error is −2·mean·(error of the mean). Random draws
//! are seeded per tensor, so estimates along a training trajectory vary smoothly with the
//! weights. Measured errors and costs are in `docs/metrics.md`; the tolerances are tested
//! in `tests/test_metrics_randomized.py`.

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::diag::Diag;
use faer::linalg::{evd, matmul, qr, svd};
use faer::{Accum, Conj, Mat, MatRef, Par};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// Relative bound on the error of Σσ above which the Gram path falls back to a full SVD.
pub const GRAM_TOLERANCE: f64 = 1e-9;

/// Cost-model weights, in units of one flop of the Gram product (a BLAS-3 rank-k update,
/// the fastest kernel here). Calibrated by `benchmarks/svd_cost.py` on the project's 2-core
/// machine: the eigensolver's tridiagonal reduction is half BLAS-2, so its (4/3)r³ flops
/// cost about 1.5 each; the Krylov products with (k+p)-column blocks about 1.5; the Lanczos
/// passes, products with only `probes` columns and hence memory-bound, about 2.5.
const EIGEN_WEIGHT: f64 = 1.5;
const KRYLOV_WEIGHT: f64 = 1.5;
const LANCZOS_WEIGHT: f64 = 2.5;
/// Auto takes the randomized path only when the model predicts it at least this many
/// times cheaper, so that the model's error cannot make auto much slower than exact.
pub const AUTO_MARGIN: f64 = 1.25;

/// Predicted cost of the exact path on an r × c matrix (r ≤ c): the Gram matrix (r²c
/// flops) and the eigenvalues of an r × r symmetric matrix ((4/3)r³ flops to tridiagonal).
pub fn exact_cost(r: usize, c: usize) -> f64 {
    let (r, c) = (r as f64, c as f64);
    r * r * c + EIGEN_WEIGHT * 4.0 / 3.0 * r * r * r
}

/// Predicted cost of the randomized path on an r × c matrix (r ≤ c) with `options`: per
/// matrix entry, 2l flops for A Ω, 4l per power iteration, 2w for B = Kᵀ A (l = k + p,
/// w = (q+1)l), and 4 per probe and Lanczos step; plus the small dense work (QR of r × w,
/// B Bᵀ, the w × w eigenproblem).
pub fn randomized_cost(r: usize, c: usize, options: &SvdOptions) -> f64 {
    let (r, c) = (r as f64, c as f64);
    let l = (options.rank + options.oversample) as f64;
    let q = options.power_iters as f64;
    let w = (q + 1.0) * l;
    let krylov = 2.0 * l * (1.0 + 2.0 * q) + 2.0 * w;
    let lanczos = 4.0 * options.probes as f64 * options.lanczos_steps as f64;
    let dense = 4.0 * r * w * w + 2.0 * w * w * c + 3.0 * w * w * w;
    r * c * (KRYLOV_WEIGHT * krylov + LANCZOS_WEIGHT * lanczos) + dense
}

/// Whether `Auto` takes the randomized path for an r × c matrix (r ≤ c): only above
/// `exact_max_dim`, and only when the cost model predicts it [`AUTO_MARGIN`] times cheaper.
pub fn prefers_randomized(r: usize, c: usize, options: &SvdOptions) -> bool {
    r > options.exact_max_dim && AUTO_MARGIN * randomized_cost(r, c, options) < exact_cost(r, c)
}

/// How singular values are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SvdMode {
    /// Exactly, for every matrix.
    Exact,
    /// By randomized SVD, for every matrix.
    Randomized,
    /// Exactly up to `exact_max_dim`, above it by the cheaper path (cost model).
    Auto,
}

/// Options of the singular-value computation.
#[derive(Clone, Debug)]
pub struct SvdOptions {
    /// Exact, randomized, or by size.
    pub mode: SvdMode,
    /// In `Auto` mode, matrices whose smaller side is at most this are computed exactly;
    /// above it, the cheaper path by the cost model.
    pub exact_max_dim: usize,
    /// Randomized mode: leading singular values resolved by the sketch (k).
    pub rank: usize,
    /// Randomized mode: extra sketch vectors (p); the Krylov space has (q+1)(k+p) columns.
    pub oversample: usize,
    /// Randomized mode: power iterations (q), i.e. depth of the block Krylov space.
    pub power_iters: usize,
    /// Randomized mode: Hutchinson probe vectors for the tail of the spectrum.
    pub probes: usize,
    /// Randomized mode: Lanczos quadrature steps per probe.
    pub lanczos_steps: usize,
}

impl Default for SvdOptions {
    fn default() -> Self {
        SvdOptions {
            mode: SvdMode::Auto,
            exact_max_dim: 2048,
            rank: 64,
            oversample: 10,
            power_iters: 2,
            probes: 8,
            lanczos_steps: 32,
        }
    }
}

/// How one matrix's singular values were computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Exactly.
    Exact,
    /// By randomized SVD.
    Randomized,
}

/// σ₁, mean σ and population variance of σ for one matrix.
#[derive(Clone, Copy, Debug)]
pub struct Spectrum {
    /// The largest singular value σ₁.
    pub sigma_max: f64,
    /// The mean of the singular values.
    pub mean: f64,
    /// The population variance of the singular values.
    pub variance: f64,
    /// How they were computed.
    pub method: Method,
}

impl Spectrum {
    fn from_singular_values(sigma: &[f64]) -> Self {
        let r = sigma.len() as f64;
        let sigma_max = sigma.iter().copied().fold(0.0, f64::max);
        let mean = sigma.iter().sum::<f64>() / r;
        let variance = sigma.iter().map(|s| (s - mean) * (s - mean)).sum::<f64>() / r;
        Spectrum { sigma_max, mean, variance, method: Method::Exact }
    }

    fn failed(method: Method) -> Self {
        Spectrum { sigma_max: f64::NAN, mean: f64::NAN, variance: f64::NAN, method }
    }

    /// Whether σ₁, the mean and the variance are all finite (the SVD converged).
    pub fn is_finite(&self) -> bool {
        self.sigma_max.is_finite() && self.mean.is_finite() && self.variance.is_finite()
    }
}

/// Singular-value summary of the `rows × cols` matrix stored row-major in `values`, which it
/// consumes: a tall matrix is first transposed into a new buffer (the original freed), so
/// that the work always runs on row-major rows of the short side, the layout in which
/// faer's Gram product is fastest (about 3× faster than the transposed view).
pub fn spectrum_of_values(values: Vec<f64>, rows: usize, cols: usize, frobenius_sq: f64, options: &SvdOptions, seed: u64) -> Spectrum {
    if rows <= cols {
        return spectrum(MatRef::from_row_major_slice(&values, rows, cols), frobenius_sq, options, seed);
    }
    let transposed = transpose(&values, rows, cols);
    drop(values);
    spectrum(MatRef::from_row_major_slice(&transposed, cols, rows), frobenius_sq, options, seed)
}

/// The row-major `cols × rows` transpose of the row-major `rows × cols` matrix `values`,
/// in cache-sized tiles.
fn transpose(values: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    const TILE: usize = 32;
    let mut out = vec![0.0; values.len()];
    for i0 in (0..rows).step_by(TILE) {
        for j0 in (0..cols).step_by(TILE) {
            for i in i0..(i0 + TILE).min(rows) {
                for j in j0..(j0 + TILE).min(cols) {
                    out[j * rows + i] = values[i * cols + j];
                }
            }
        }
    }
    out
}

/// Singular-value summary of `a` (any shape, finite entries). `frobenius_sq` is ‖a‖_F²,
/// already known to the caller; `seed` fixes the randomized path's draws.
pub fn spectrum(a: MatRef<'_, f64>, frobenius_sq: f64, options: &SvdOptions, seed: u64) -> Spectrum {
    // Work with the short-and-wide orientation: rows = r = min(m, n).
    let a = if a.nrows() <= a.ncols() { a } else { a.transpose() };
    let randomized = match options.mode {
        SvdMode::Exact => false,
        SvdMode::Randomized => true,
        SvdMode::Auto => prefers_randomized(a.nrows(), a.ncols(), options),
    };
    // A Krylov space as wide as the matrix is no cheaper than the exact computation.
    let krylov_width = (options.power_iters + 1) * (options.rank + options.oversample);
    if randomized && krylov_width < a.nrows() {
        randomized_spectrum(a, frobenius_sq, options, seed)
    } else {
        exact_spectrum(a)
    }
}

/// Eigenvalues (ascending) of the symmetric matrix whose lower triangle is `g`.
fn symmetric_eigenvalues(g: MatRef<'_, f64>) -> Option<Vec<f64>> {
    let n = g.nrows();
    let mut lambda = Diag::<f64>::zeros(n);
    let mut buf = MemBuffer::new(evd::self_adjoint_evd_scratch::<f64>(
        n,
        evd::ComputeEigenvectors::No,
        Par::Seq,
        Default::default(),
    ));
    evd::self_adjoint_evd(g, lambda.as_mut(), None, Par::Seq, MemStack::new(&mut buf), Default::default())
        .ok()?;
    Some((0..n).map(|i| lambda[i]).collect())
}

/// Eigenvalues (ascending) and eigenvectors of a small dense symmetric matrix.
fn symmetric_eigen(g: MatRef<'_, f64>) -> Option<(Vec<f64>, Mat<f64>)> {
    let n = g.nrows();
    let mut lambda = Diag::<f64>::zeros(n);
    let mut u = Mat::<f64>::zeros(n, n);
    let mut buf = MemBuffer::new(evd::self_adjoint_evd_scratch::<f64>(
        n,
        evd::ComputeEigenvectors::Yes,
        Par::Seq,
        Default::default(),
    ));
    evd::self_adjoint_evd(
        g,
        lambda.as_mut(),
        Some(u.as_mut()),
        Par::Seq,
        MemStack::new(&mut buf),
        Default::default(),
    )
    .ok()?;
    Some(((0..n).map(|i| lambda[i]).collect(), u))
}

/// Lower triangle of `a aᵀ`.
fn gram_lower(a: MatRef<'_, f64>) -> Mat<f64> {
    let r = a.nrows();
    let mut g = Mat::<f64>::zeros(r, r);
    triangular::matmul(
        g.as_mut(),
        BlockStructure::TriangularLower,
        Accum::Replace,
        a,
        BlockStructure::Rectangular,
        a.transpose(),
        BlockStructure::Rectangular,
        1.0,
        Par::Seq,
    );
    g
}

fn product(lhs: MatRef<'_, f64>, rhs: MatRef<'_, f64>) -> Mat<f64> {
    let mut out = Mat::<f64>::zeros(lhs.nrows(), rhs.ncols());
    matmul::matmul(out.as_mut(), Accum::Replace, lhs, rhs, 1.0, Par::Seq);
    out
}

/// Singular values (descending) by faer's bidiagonal SVD.
fn svd_singular_values(a: MatRef<'_, f64>) -> Option<Vec<f64>> {
    let (m, n) = a.shape();
    let mut s = Diag::<f64>::zeros(m.min(n));
    let mut buf = MemBuffer::new(svd::svd_scratch::<f64>(
        m,
        n,
        svd::ComputeSvdVectors::No,
        svd::ComputeSvdVectors::No,
        Par::Seq,
        Default::default(),
    ));
    svd::svd(a, s.as_mut(), None, None, Par::Seq, MemStack::new(&mut buf), Default::default()).ok()?;
    Some((0..m.min(n)).map(|i| s[i]).collect())
}

/// A posteriori bound on |Σ√λ̂ − Σσ| for Gram eigenvalues λ̂ with absolute error ≤ δ.
fn gram_error_bound(lambda: &[f64], delta: f64) -> f64 {
    lambda
        .iter()
        .map(|&l| if l > delta { delta / (2.0 * l.sqrt()) } else { delta.sqrt() })
        .sum()
}

fn exact_spectrum(a: MatRef<'_, f64>) -> Spectrum {
    let (r, c) = a.shape();
    if r == 0 {
        return Spectrum::failed(Method::Exact);
    }
    if let Some(mut lambda) = symmetric_eigenvalues(gram_lower(a).as_ref()) {
        let lambda_max = lambda.iter().copied().fold(0.0, f64::max);
        // Rounding in forming G (∝ √c ε ‖A‖²) and the backward error of the eigensolver
        // (∝ r ε ‖G‖), with a safety factor.
        let delta = 4.0 * f64::EPSILON * (r as f64 + (c as f64).sqrt()) * lambda_max;
        for l in lambda.iter_mut() {
            *l = l.max(0.0);
        }
        let sigma: Vec<f64> = lambda.iter().map(|l| l.sqrt()).collect();
        let total: f64 = sigma.iter().sum();
        if total == 0.0 || gram_error_bound(&lambda, delta) <= GRAM_TOLERANCE * total {
            return Spectrum::from_singular_values(&sigma);
        }
    }
    match svd_singular_values(a) {
        Some(sigma) => Spectrum::from_singular_values(&sigma),
        None => Spectrum::failed(Method::Exact),
    }
}

/// Orthonormal basis (thin Q of a Householder QR) of the columns of `y` (rows ≥ cols).
fn orthonormalize(mut y: Mat<f64>) -> Mat<f64> {
    let (m, n) = y.shape();
    let size = m.min(n);
    let bs = qr::no_pivoting::factor::recommended_block_size::<f64>(m, n);
    let mut coeff = Mat::<f64>::zeros(bs, size);
    let mut buf = MemBuffer::new(qr::no_pivoting::factor::qr_in_place_scratch::<f64>(m, n, bs, Par::Seq, Default::default()));
    qr::no_pivoting::factor::qr_in_place(y.as_mut(), coeff.as_mut(), Par::Seq, MemStack::new(&mut buf), Default::default());
    let mut q = Mat::<f64>::identity(m, size);
    let mut buf = MemBuffer::new(
        faer::linalg::householder::apply_block_householder_sequence_on_the_left_in_place_scratch::<f64>(m, bs, size),
    );
    faer::linalg::householder::apply_block_householder_sequence_on_the_left_in_place_with_conj(
        y.as_ref(),
        coeff.as_ref(),
        Conj::No,
        q.as_mut(),
        Par::Seq,
        MemStack::new(&mut buf),
    );
    q
}

fn randomized_spectrum(a: MatRef<'_, f64>, frobenius_sq: f64, options: &SvdOptions, seed: u64) -> Spectrum {
    let (r, c) = a.shape();
    let l = (options.rank + options.oversample).min(r);
    let k = options.rank.min(l);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);

    // Randomized block Krylov range finder: keep every power iterate, K = [Y₀, G Y₀, …,
    // G^q Y₀] with Y₀ = A Ω (each block orthonormalised for stability), so Rayleigh–Ritz
    // on K resolves the leading singular values far better than the last iterate alone.
    let omega = Mat::<f64>::from_fn(c, l, |_, _| rng.sample(StandardNormal));
    let mut blocks = vec![orthonormalize(product(a, omega.as_ref()))];
    for _ in 0..options.power_iters {
        let last = blocks.last().unwrap();
        let next = product(a, product(a.transpose(), last.as_ref()).as_ref());
        blocks.push(orthonormalize(next));
    }
    let width: usize = blocks.iter().map(|b| b.ncols()).sum::<usize>().min(r);
    let stacked = Mat::<f64>::from_fn(r, blocks.len() * l, |i, j| blocks[j / l][(i, j % l)]);
    let krylov = orthonormalize(stacked).subcols(0, width).to_owned();

    // Ritz pairs of G = A Aᵀ on span(K): eigenpairs of B Bᵀ, B = Kᵀ A (ascending).
    let b = product(krylov.transpose(), a);
    let Some((theta, vectors)) = symmetric_eigen(product(b.as_ref(), b.transpose()).as_ref()) else {
        return Spectrum::failed(Method::Randomized);
    };
    let top = width - k..width;
    let head: f64 = theta[top.clone()].iter().map(|t| t.max(0.0).sqrt()).sum();
    // Ritz vectors satisfy uᵢᵀ G uᵢ = θᵢ, so tr(P G P) = ‖A‖²_F − Σ θᵢ exactly.
    let trace_pgp = frobenius_sq - theta[top.clone()].iter().sum::<f64>();
    let ritz = product(krylov.as_ref(), vectors.subcols(width - k, k));

    // Tail tr(P √G P), P = I − U Uᵀ: Hutchinson with Rademacher probes projected off the
    // top-k Ritz vectors, each quadratic form by Lanczos quadrature, with a control variate.
    let p = options.probes.max(1);
    let z = Mat::<f64>::from_fn(r, p, |_, _| if rng.random::<bool>() { 1.0 } else { -1.0 });
    let coef = product(ritz.transpose(), z.as_ref());
    let mut probes = z;
    matmul::matmul(probes.as_mut(), Accum::Add, ritz.as_ref(), coef.as_ref(), -1.0, Par::Seq);
    let Some(quadrature) = lanczos_sqrt_quadrature(a, probes, &vec![options.lanczos_steps; p]) else {
        return Spectrum::failed(Method::Randomized);
    };
    let tail = control_variate_tail(&quadrature, trace_pgp);

    // Ritz values and Lanczos nodes are Rayleigh quotients of G, hence ≤ λ₁: take the largest.
    let lambda_max = quadrature.iter().map(|q| q.largest_node).fold(theta[width - 1], f64::max);
    let mean = (head + tail).max(0.0) / r as f64;
    let variance = (frobenius_sq / r as f64 - mean * mean).max(0.0);
    Spectrum { sigma_max: lambda_max.max(0.0).sqrt(), mean, variance, method: Method::Randomized }
}

/// Gauss–Lanczos quadrature of one start vector x: xᵀ √G x, xᵀ G x (exact: the first
/// Lanczos coefficient), the quadrature's nodes and weights (a discrete estimate of the
/// spectral measure seen from x), and the largest node.
struct Quadrature {
    form: f64,
    linear: f64,
    nodes: Vec<f64>,
    weights: Vec<f64>,
    largest_node: f64,
}

/// Hutchinson estimate of tr(P √G P) from probe quadratures, with xᵀ G x as a control
/// variate whose mean tr(P G P) is known exactly. The coefficient is the slope of the
/// weighted least-squares line through √θ on the probes' pooled quadrature measure: the
/// best linear stand-in for √ on the tail spectrum, which removes most of the variance
/// that a spread-out tail gives Hutchinson's estimator.
fn control_variate_tail(probes: &[Quadrature], trace_pgp: f64) -> f64 {
    let p = probes.len() as f64;
    let mean_form = probes.iter().map(|q| q.form).sum::<f64>() / p;
    let mean_linear = probes.iter().map(|q| q.linear).sum::<f64>() / p;
    let (mut w, mut wx, mut wy, mut wxx, mut wxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for q in probes {
        for (&theta, &weight) in q.nodes.iter().zip(&q.weights) {
            let (x, y) = (theta.max(0.0), theta.max(0.0).sqrt());
            w += weight;
            wx += weight * x;
            wy += weight * y;
            wxx += weight * x * x;
            wxy += weight * x * y;
        }
    }
    let var = wxx / w - (wx / w).powi(2);
    let slope = if w > 0.0 && var > 0.0 { (wxy / w - wx * wy / (w * w)) / var } else { 0.0 };
    mean_form - slope * (mean_linear - trace_pgp.max(0.0))
}

/// For each column x of `x0`, Gauss–Lanczos quadrature of xᵀ √(A Aᵀ) x with `steps[j]`
/// Lanczos steps for column j. The recurrences of all columns advance together, so each
/// step costs two matrix products with a block of the still-active columns.
fn lanczos_sqrt_quadrature(a: MatRef<'_, f64>, x0: Mat<f64>, steps: &[usize]) -> Option<Vec<Quadrature>> {
    let (r, p) = x0.shape();
    debug_assert_eq!(steps.len(), p);
    let norms_sq: Vec<f64> = (0..p).map(|j| x0.col(j).squared_norm_l2()).collect();
    let mut v = x0;
    for j in 0..p {
        let norm = norms_sq[j].sqrt();
        if norm > 0.0 {
            for i in 0..r {
                v[(i, j)] /= norm;
            }
        }
    }
    let mut v_prev = Mat::<f64>::zeros(r, p);
    let mut alphas: Vec<Vec<f64>> = vec![Vec::new(); p];
    let mut betas: Vec<Vec<f64>> = vec![Vec::new(); p];
    let limit: Vec<usize> = steps.iter().map(|&s| s.clamp(1, r)).collect();
    let mut active: Vec<usize> = (0..p).filter(|&j| norms_sq[j] > 0.0).collect();

    for step in 0.. {
        if active.is_empty() {
            break;
        }
        // Gather the active columns so finished ones cost nothing.
        let block = Mat::<f64>::from_fn(r, active.len(), |i, c| v[(i, active[c])]);
        let w_half = product(a.transpose(), block.as_ref());
        let w_block = product(a, w_half.as_ref());
        let mut still_active = Vec::with_capacity(active.len());
        for (c, &j) in active.iter().enumerate() {
            let beta_prev = betas[j].last().copied().unwrap_or(0.0);
            let mut w: Vec<f64> = (0..r).map(|i| w_block[(i, c)]).collect();
            let alpha: f64 = (0..r).map(|i| v[(i, j)] * w[i]).sum();
            for i in 0..r {
                w[i] -= alpha * v[(i, j)] + beta_prev * v_prev[(i, j)];
            }
            alphas[j].push(alpha);
            let beta = w.iter().map(|x| x * x).sum::<f64>().sqrt();
            // Done, or an invariant Krylov subspace (the rule so far is then exact).
            if step + 1 == limit[j] || beta <= 1e-12 * (alpha.abs() + beta_prev) {
                continue;
            }
            betas[j].push(beta);
            for i in 0..r {
                v_prev[(i, j)] = v[(i, j)];
                v[(i, j)] = w[i] / beta;
            }
            still_active.push(j);
        }
        active = still_active;
    }

    (0..p)
        .map(|j| {
            if norms_sq[j] == 0.0 {
                return Some(Quadrature { form: 0.0, linear: 0.0, nodes: vec![], weights: vec![], largest_node: 0.0 });
            }
            let (alpha, beta) = (&alphas[j], &betas[j]);
            let m = alpha.len();
            let t = Mat::<f64>::from_fn(m, m, |i, k| {
                if i == k {
                    alpha[i]
                } else if i == k + 1 {
                    beta[k]
                } else {
                    0.0
                }
            });
            let (nodes, vectors) = symmetric_eigen(t.as_ref())?;
            let weights: Vec<f64> = (0..m).map(|i| norms_sq[j] * vectors[(0, i)].powi(2)).collect();
            let form = weights.iter().zip(&nodes).map(|(w, t)| w * t.max(0.0).sqrt()).sum();
            Some(Quadrature { form, linear: norms_sq[j] * alpha[0], largest_node: nodes[m - 1], nodes, weights })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(m: usize, n: usize, seed: u64) -> Mat<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        Mat::from_fn(m, n, |_, _| rng.sample::<f64, _>(StandardNormal))
    }

    fn frob_sq(a: MatRef<'_, f64>) -> f64 {
        a.squared_norm_l2()
    }

    fn relative(a: f64, b: f64) -> f64 {
        (a - b).abs() / b.abs().max(1e-300)
    }

    #[test]
    fn gram_path_matches_bidiagonal_svd() {
        for (m, n) in [(1, 7), (7, 1), (30, 30), (20, 45), (45, 20)] {
            let a = pseudo_random(m, n, (m * 100 + n) as u64);
            let reference = Spectrum::from_singular_values(&svd_singular_values(a.as_ref()).unwrap());
            let s = spectrum(a.as_ref(), frob_sq(a.as_ref()), &SvdOptions { mode: SvdMode::Exact, ..Default::default() }, 0);
            assert!(relative(s.sigma_max, reference.sigma_max) < 1e-12, "{m}x{n}");
            assert!(relative(s.mean, reference.mean) < 1e-10, "{m}x{n}");
            assert!(relative(s.variance, reference.variance) < 1e-9, "{m}x{n}");
            assert_eq!(s.method, Method::Exact);
        }
    }

    #[test]
    fn rank_deficient_matrices_fall_back_to_the_svd() {
        // Rank 2 in 40×40: the Gram path cannot resolve the 38 zero singular values.
        let u = pseudo_random(40, 2, 1);
        let v = pseudo_random(2, 40, 2);
        let a = product(u.as_ref(), v.as_ref());
        let lambda = symmetric_eigenvalues(gram_lower(a.as_ref()).as_ref()).unwrap();
        let lmax = lambda.iter().copied().fold(0.0, f64::max);
        let total: f64 = lambda.iter().map(|l| l.max(0.0).sqrt()).sum();
        let delta = 4.0 * f64::EPSILON * (40.0 + 40f64.sqrt()) * lmax;
        assert!(gram_error_bound(&lambda, delta) > GRAM_TOLERANCE * total, "fallback must trigger");

        let s = exact_spectrum(a.as_ref());
        let reference = Spectrum::from_singular_values(&svd_singular_values(a.as_ref()).unwrap());
        assert!(relative(s.mean, reference.mean) < 1e-12);
    }

    #[test]
    fn zero_matrix_has_zero_spectrum() {
        let a = Mat::<f64>::zeros(5, 8);
        let s = exact_spectrum(a.as_ref());
        assert_eq!((s.sigma_max, s.mean, s.variance), (0.0, 0.0, 0.0));
        let s = randomized_spectrum(
            Mat::<f64>::zeros(50, 80).as_ref(),
            0.0,
            &SvdOptions { rank: 4, oversample: 2, ..Default::default() },
            3,
        );
        assert_eq!((s.sigma_max, s.mean, s.variance), (0.0, 0.0, 0.0));
    }

    #[test]
    fn orthonormalize_gives_orthonormal_columns() {
        let q = orthonormalize(pseudo_random(50, 6, 9));
        let qtq = product(q.transpose(), q.as_ref());
        for i in 0..6 {
            for j in 0..6 {
                let expected = if i == j { 1.0 } else { 0.0 };
                assert!((qtq[(i, j)] - expected).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn lanczos_quadrature_is_exact_for_small_matrices() {
        // With as many steps as rows, Gauss quadrature of xᵀ√G x is exact.
        let a = pseudo_random(12, 30, 4);
        let x = pseudo_random(12, 3, 5);
        let forms: Vec<f64> =
            lanczos_sqrt_quadrature(a.as_ref(), x.clone(), &[12; 3]).unwrap().iter().map(|q| q.form).collect();
        // Reference: √G through its eigendecomposition.
        let g = product(a.as_ref(), a.transpose());
        let (lambda, u) = symmetric_eigen(g.as_ref()).unwrap();
        for j in 0..3 {
            let coords = product(u.transpose(), x.subcols(j, 1));
            let exact: f64 = (0..12).map(|i| coords[(i, 0)].powi(2) * lambda[i].max(0.0).sqrt()).sum();
            assert!(relative(forms[j], exact) < 1e-8, "{} vs {}", forms[j], exact);
        }
    }

    #[test]
    fn tall_matrices_are_transposed_without_changing_the_spectrum() {
        let a = pseudo_random(37, 11, 21);
        let values: Vec<f64> = (0..37).flat_map(|i| (0..11).map(move |j| (i, j))).map(|(i, j)| a[(i, j)]).collect();
        let t = transpose(&values, 37, 11);
        for i in 0..37 {
            for j in 0..11 {
                assert_eq!(t[j * 37 + i], a[(i, j)]);
            }
        }
        let options = SvdOptions { mode: SvdMode::Exact, ..Default::default() };
        let direct = spectrum(a.as_ref(), frob_sq(a.as_ref()), &options, 0);
        let owned = spectrum_of_values(values, 37, 11, frob_sq(a.as_ref()), &options, 0);
        assert!(relative(owned.mean, direct.mean) < 1e-13 && relative(owned.sigma_max, direct.sigma_max) < 1e-13);
    }

    #[test]
    fn auto_picks_the_cheaper_path_by_the_cost_model() {
        let options = SvdOptions { exact_max_dim: 256, ..Default::default() };
        // Pythia-410M shapes (smaller side 1024): randomized would cost more.
        for (r, c) in [(1024, 1024), (1024, 3072), (1024, 4096)] {
            assert!(randomized_cost(r, c, &options) > exact_cost(r, c), "{r}x{c}");
            assert!(!prefers_randomized(r, c, &options), "{r}x{c}");
        }
        // Large squares: the eigensolver's r³ dominates and the sketch wins.
        for n in [3072, 4096, 8192] {
            assert!(prefers_randomized(n, n, &options), "{n}");
        }
        // Never below the threshold, however cheap.
        assert!(!prefers_randomized(8192, 8192, &SvdOptions { exact_max_dim: 8192, ..Default::default() }));
        // A larger rank makes the sketch dearer.
        let wide_rank = SvdOptions { rank: 1000, ..options.clone() };
        assert!(!prefers_randomized(4096, 4096, &wide_rank));
    }

    #[test]
    fn randomized_recovers_low_rank_plus_noise() {
        // Rank-5 signal plus small noise, 300×500: σ₁ to 1e-8, mean within 1 %.
        let (m, n) = (300, 500);
        let u = pseudo_random(m, 5, 11);
        let v = pseudo_random(5, n, 12);
        let noise = pseudo_random(m, n, 13);
        let a = Mat::<f64>::from_fn(m, n, |i, j| {
            (0..5).map(|t| u[(i, t)] * v[(t, j)] * (5 - t) as f64).sum::<f64>() + 0.05 * noise[(i, j)]
        });
        let reference = Spectrum::from_singular_values(&svd_singular_values(a.as_ref()).unwrap());
        let options = SvdOptions { mode: SvdMode::Randomized, rank: 16, ..Default::default() };
        let s = spectrum(a.as_ref(), frob_sq(a.as_ref()), &options, 42);
        assert_eq!(s.method, Method::Randomized);
        assert!(relative(s.sigma_max, reference.sigma_max) < 1e-8);
        assert!(relative(s.mean, reference.mean) < 0.01, "{} vs {}", s.mean, reference.mean);
        assert!(relative(s.variance, reference.variance) < 0.01);
        // Deterministic for a given seed.
        let again = spectrum(a.as_ref(), frob_sq(a.as_ref()), &options, 42);
        assert_eq!(s.mean.to_bits(), again.mean.to_bits());
    }
}
